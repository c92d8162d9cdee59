-- SQL-standard function bodies: the inner semicolons do not end the statement
CREATE OR REPLACE FUNCTION pg_temp.corpus_add(a int, b int) RETURNS int LANGUAGE sql
BEGIN ATOMIC
  SELECT a + b;
END;
CREATE OR REPLACE FUNCTION pg_temp.corpus_sign(x int) RETURNS text LANGUAGE sql
BEGIN ATOMIC
  SELECT CASE WHEN x < 0 THEN 'negative' WHEN x = 0 THEN 'zero' ELSE 'positive' END;
END;
create or replace procedure pg_temp.corpus_noop() language sql begin atomic select 1; select 2; end;
CALL pg_temp.corpus_noop();
SELECT pg_temp.corpus_add(40, 2)::text || ' ' || pg_temp.corpus_sign(-3) AS result;
