"""Issue 15: which path a %%wgsql statement takes, decided from its text with no round trip
(wgmagic.sql.results.may_be_big). A wrong guess costs speed, never a value (the differential test in
tests/integration/test_wgsql_values.py holds the two paths to each other); these pin the guesses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmagic.sql.results import SMALL_ROWS, may_be_big

SMALL = [
    "SELECT 1",
    "select now(), version()",
    "SELECT 42 AS answer;",
    "VALUES (1, 'a'), (2, 'b')",
    "SELECT 'from' AS x",
    'SELECT "from"',
    "SELECT $$ from $$",
    "SELECT $tag$ from big $tag$",
    "SELECT 1 -- from big\n",
    "SELECT /* from big */ 1",
    "SELECT E'it\\'s from' AS t",
    "SELECT * FROM big LIMIT 10",
    f"SELECT * FROM big ORDER BY id LIMIT {SMALL_ROWS};",
    "SELECT x FROM t FETCH FIRST 5 ROWS ONLY",
]
BIG = [
    "SELECT * FROM big",
    "select id from big where id > 3",
    "WITH t AS (SELECT * FROM big) SELECT * FROM t",
    f"SELECT * FROM big LIMIT {SMALL_ROWS + 1}",
    "SELECT * FROM big LIMIT 5 OFFSET 10",  # not recognised: the safe guess
    "SELECT * FROM (SELECT * FROM big LIMIT 5) AS s, big",
    "SELECT 'unterminated from big",
]


@pytest.mark.parametrize("sql", SMALL)
def test_small_statements_take_the_row_path(sql):
    assert may_be_big(sql) is False


@pytest.mark.parametrize("sql", BIG)
def test_statements_that_may_be_big_take_the_copy_path(sql):
    assert may_be_big(sql) is True


@given(st.text(max_size=300))
def test_any_text_gives_an_answer(sql):
    assert may_be_big(sql) in (True, False)


@given(st.text(alphabet=st.characters(blacklist_characters="'\"$-/*;"), max_size=60))
def test_a_from_clause_outside_quotes_is_never_called_small(words):
    assert may_be_big(f"SELECT {words} FROM big {words}") or "limit" in words.lower() or "fetch" in words.lower()
