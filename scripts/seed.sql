-- seed.sql - demo data for `make run`: 10,000 users, three orders each,
-- and their audit trail.  Does nothing when users already exist, so
-- running it again never duplicates data.  Not a migration: production
-- databases are never seeded.
DO $$
DECLARE
    first text[] := ARRAY['Ada', 'Alan', 'Grace', 'Edsger', 'Barbara',
                          'Donald', 'Frances', 'Ken', 'Margaret', 'Dennis'];
    last  text[] := ARRAY['Lovelace', 'Turing', 'Hopper', 'Dijkstra',
                          'Liskov', 'Knuth', 'Allen', 'Thompson',
                          'Hamilton', 'Ritchie'];
BEGIN
    IF EXISTS (SELECT 1 FROM users) THEN
        RAISE NOTICE 'users exist already: not seeding';
        RETURN;
    END IF;
    INSERT INTO users (name, email, created_at)
    SELECT first[1 + i % 10] || ' ' || last[1 + (i / 10) % 10],
           'user' || i || '@example.com',
           now() - make_interval(mins => 10001 - i)
    FROM generate_series(1, 10000) AS i;

    INSERT INTO audit_log (user_id, action, entity, entity_id, detail,
                           created_at)
    SELECT id, 'created', 'user', id,
           jsonb_build_object('name', name, 'email', email), created_at
    FROM users;

    INSERT INTO orders (user_id, amount_cents, currency, status, created_at)
    SELECT u.id,
           100 + (u.id * 37 + n * 101) % 99900,
           (ARRAY['EUR', 'USD', 'GBP'])[1 + (u.id + n) % 3],
           (ARRAY['pending', 'paid', 'cancelled'])[1 + (u.id * n) % 3],
           u.created_at + make_interval(secs => n)
    FROM users u, generate_series(1, 3) AS n;

    INSERT INTO audit_log (user_id, action, entity, entity_id, detail,
                           created_at)
    SELECT user_id, 'order_created', 'order', id,
           jsonb_build_object('amount_cents', amount_cents,
                              'currency', currency), created_at
    FROM orders;
    ANALYZE;
END
$$;
