CREATE OR REPLACE FUNCTION pg_temp.corpus_plpgsql(n int) RETURNS int LANGUAGE plpgsql AS $body$
DECLARE total int := 0;
BEGIN
  FOR i IN 1..n LOOP
    total := total + i;  -- a ; inside the body
  END LOOP;
  RETURN total;
END;
$body$;
PREPARE corpus_q(int) AS SELECT $1 * 2 AS doubled;
EXECUTE corpus_q(21);
DEALLOCATE corpus_q;
SELECT a$b$ FROM (SELECT 7 AS a$b$) t;
SELECT (1.5e3 + .5)::int AS n FROM (SELECT 1 AS "1;") t WHERE false;
SELECT pg_temp.corpus_plpgsql(10)::text || ';' || (SELECT count(*) FROM (VALUES (1), (2)) v(x))::text AS result;
