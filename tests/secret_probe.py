"""Feed a known secret into every argument of every %wg / %%wgsql subcommand and collect everything the user
could see: stdout, stderr, logging, the exception and its rendered traceback, the returned object's repr and
HTML (issue 11, item 7). Used by tests/unit/test_magic_secrets.py (no tunnel) and
tests/integration/test_no_secrets.py (a tunnel up)."""

from __future__ import annotations

import base64
import shlex

SECRET = "Zq9s3cr3tPW"  # what must never be seen
KEY = base64.b64encode(bytes(range(7, 39))).decode()  # a WireGuard private key pasted somewhere

# The secret in every form a user might paste it in.
FORMS = [
    f"postgresql://app:{SECRET}@db.internal:5432/app",
    f"postgresql://app:{SECRET}@db.internal/app?sslmode=disable",
    f"postgresql://app@db.internal/app?password={SECRET}",
    f"postgresql+pg8000://app:{SECRET}@db.internal/app",
    f"host=db.internal user=app password={SECRET}",
    f"host=db.internal user=app password='{SECRET} x'",
    f"host=db.internal sslpassword={SECRET}",
    f"app:{SECRET}@db.internal",
    f"socks5h://user:{SECRET}@127.0.0.1:1080",
    f"mysql+pymysql://u:{SECRET}@h/d",
    f"http://u:{SECRET}@proxy:3128",
    KEY,
]

# Every subcommand, with {} where an argument goes. Options that take numbers get the secret too.
WG = [
    "connect {}", "connect {} --name t", "connect /nonexistent --name {}", "connect /nonexistent --timeout {}",
    "status {}", "disconnect {}", "forward {}", "forward db.internal:5432 --local {}",
    "forward db.internal:5432 --tunnel {}", "socks {}", "socks --tunnel {}", "ping {}", "ping db.internal -c {}",
    "ping db.internal --tunnel {}", "resolve {}", "resolve db.internal --tunnel {}", "connections {}",
    "diag --window {}", "diag --tunnel {}", "diag --ping {}", "diag --bench {}", "plot --window {}",
    "plot --tunnel {}", "plot --save {}", "bench {}", "bench 198.18.0.1:9 --seconds {}",
    "bench 198.18.0.1:9 --tunnel {}",
    "doctor {}", "doctor --target {}", "doctor /nonexistent --timeout {}", "{}", "connect --help {}",
]
WGSQL = [
    "%%wgsql {}\nSELECT 1", "%%wgsql {} --no-tunnel\nSELECT 1", "%%wgsql {} --alias a1\nSELECT 1",
    "%%wgsql --alias {}\nSELECT 1", "%%wgsql -o {}\nSELECT 1", "%%wgsql --tunnel {}\nSELECT 1",
    "%%wgsql --limit {}\nSELECT 1", "%%wgsql {} --close", "%wgsql {}", "x << %%wgsql {}\nSELECT 1",
    "%%wgsql {} --tunnel nosuch\nSELECT 1", "%%wgsql {} extra words\nSELECT 1", "%%wgsql --section {}\nSELECT 1",
]


def lines() -> list[str]:
    out = []
    for form in FORMS:
        quoted = shlex.quote(form)
        out += ["%wg " + template.format(quoted) for template in WG]
        out += [template.format(quoted) for template in WGSQL]
    return out


def seen(shell, line: str, capsys, caplog) -> str:
    """Everything running `line` in `shell` shows: output, logs, the error and the result."""
    caplog.clear()
    result = shell.run_cell(line)
    captured = capsys.readouterr()
    parts = [captured.out, captured.err, caplog.text]
    for error in (result.error_before_exec, result.error_in_exec):
        if error is not None:
            parts += [str(error), repr(error), str(error.args)]
            render = getattr(error, "_render_traceback_", None)
            if render is not None:
                parts += render()
    if result.result is not None:
        parts.append(repr(result.result))
        html = getattr(result.result, "_repr_html_", None)
        if html is not None:
            parts.append(str(html()))
    return "\n".join(parts)


def leaks(text: str) -> bool:
    return SECRET in text or KEY in text or KEY[:20] in text
