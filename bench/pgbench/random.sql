-- Header: n = a random row among the :wrap seeded ones.
\set n random(1, :wrap)
