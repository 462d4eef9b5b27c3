-- A PostgreSQL type matrix: one column per type the protocol names, rows with the edge values
-- of each (extremes, empty values, infinities, BC dates, JSON null, nested arrays). Used by the
-- PostgreSQL round-trip tests; loads into an empty database.
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);

CREATE TABLE parent (
  id serial PRIMARY KEY,
  name text UNIQUE
);

CREATE TABLE matrix (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  parent_id integer REFERENCES parent (id) ON DELETE CASCADE,
  i2 smallint, i4 integer, i8 bigint,
  n numeric, n2 numeric(12, 2),
  f4 real, f8 double precision,
  t text, vc varchar(20), c char(5),
  b bytea,
  bo boolean NOT NULL DEFAULT false,
  d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
  u uuid,
  j json, jb jsonb,
  ai integer[], at text[],
  m mood,
  ip inet, net cidr,
  mo money,
  dom posint,
  gen bigint GENERATED ALWAYS AS (i4::bigint * 2) STORED
);
CREATE INDEX matrix_lower_t ON matrix (lower(t));
CREATE INDEX matrix_ts ON matrix (ts) WHERE ts IS NOT NULL;

INSERT INTO parent (name) VALUES ('a'), ('b'), ('it''s');

INSERT INTO matrix (parent_id, i2, i4, i8, n, n2, f4, f8, t, vc, c, b, bo, d, tm, ttz, ts, tstz, iv, u, j, jb, ai, at, m, ip, net, mo, dom) VALUES
 (1, -32768, 2147483, -9223372036854775808, 'NaN', 1234567890.12, 1.1, 1e308,
  E'tab\there\nnewline \\ back "quoted" ''single''', 'héllo 🦀', 'ab', '\x00ff10', true,
  '2024-02-29', '23:59:59.999999', '12:00:00+05:30', '2024-01-01 12:34:56.123456',
  '2024-06-30 23:59:59.5+02', '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"b": 1,   "a": [1, 2.50]}', '{"b": 1, "a": 123456789012345678901234567890.5, "x-jsonb": "kept"}',
  '{1,NULL,3}', '{"x,y","q\"uote",NULL,""}', 'happy', '192.168.0.1/24', '10.0.0.0/8', 1234.56, 7),
 (2, 32767, -2147483648, 9223372036854775807, '123456789012345678901234567890.000000000000000000001', -0.5,
  'Infinity', '-Infinity', '', '', '', '', false,
  'infinity', '24:00:00', '00:00:00-12', '-infinity', 'infinity', '-1 day', '00000000-0000-0000-0000-000000000000',
  'null', 'null', '{}', '{}', 'sad', '::1', '::/0', -0.01, 1),
 (NULL, 0, 0, 0, '-0.0001', 0, 5e-45, 5e-324, 'x', 'x', 'x', NULL, true,
  '0044-03-15 BC', '00:00', NULL, '0044-03-15 12:00:00 BC', '1999-12-31 23:59:59.000001+00', 'PT0S', NULL,
  '[]', '"str"', '{{1,2},{3,4}}', '{"{}"}', 'ok', '2001:db8::1', NULL, 0, NULL),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{"x-jsonb": "null"}', NULL, NULL, NULL, NULL, NULL, NULL, NULL);
