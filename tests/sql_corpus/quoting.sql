/* a block comment; with /* a nested one; */ still a comment; */
SELECT 'it''s; fine' AS a;
SELECT E'back\\slash\'; quote' AS b;
SELECT 'continued;'
  'literal' AS c;
SELECT E'escaped', 'standard'
-- a comment between the parts; with a semicolon
'\'';' AS d;
SELECT U&'\0041;' AS e, B'0101' AS f, X'1F' AS g;
SELECT "quoted;""ident" FROM (SELECT 1 AS "quoted;""ident") AS t;
SELECT $$ dollar; quoted $$ AS h, $q$ tagged $$ ; $q$ AS i;
SELECT 'a' || 'b'; SELECT 2; SELECT 'x;y' AS result
