BEGIN;
CREATE TEMP TABLE corpus_t (id int, note text);
INSERT INTO corpus_t VALUES (1, 'one; two'), (2, $$three; four$$);
END;
SELECT CASE WHEN count(*) = 2 THEN 'ok' END AS result FROM corpus_t;
