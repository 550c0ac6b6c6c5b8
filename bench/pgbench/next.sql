-- Header: n = a number no other client of this run has used, 1, 2, 3, … (clients interleave),
-- wrapping around after :wrap. Variables -D seqno=0 -D nclients=<clients> -D wrap=<rows>.
\set n (:seqno * :nclients + :client_id) % :wrap + 1
\set seqno :seqno + 1
