-- 0001_schema.sql - users, orders, the audit trail, idempotency keys.
--
-- The rules live in the database as well as in apiaryd: a request that
-- slipped past the server's validation still cannot store a bad row.
-- Every list query of SPEC 2 has an index that serves it in order.

CREATE TABLE users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL
                CHECK (char_length(name) BETWEEN 1 AND 100 AND name = btrim(name)),
    email       text NOT NULL
                CHECK (char_length(email) BETWEEN 3 AND 254 AND email LIKE '%_@_%'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- one account per address, whatever its case
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE orders (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- RESTRICT: deleting a user who has orders is refused (409), never
    -- silently takes the orders with it
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    amount_cents  bigint NOT NULL CHECK (amount_cents > 0),
    currency      text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'paid', 'cancelled')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- GET /users/{id}/orders: by user, in id order
CREATE INDEX orders_user_id_id_idx ON orders (user_id, id);

-- No foreign key to users: the trail outlives the user (SPEC 2).
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL,
    action      text NOT NULL CHECK (action IN
                ('created', 'updated', 'deleted', 'order_created',
                 'order_status')),
    entity      text NOT NULL CHECK (entity IN ('user', 'order')),
    entity_id   bigint NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- GET /users/{id}/audit: newest first
CREATE INDEX audit_log_user_id_id_idx ON audit_log (user_id, id DESC);

-- POST /orders with Idempotency-Key: the key, a digest of the request it
-- answered, and the order it created.  The primary key makes concurrent
-- retries with one key create exactly one order.
CREATE TABLE idempotency_keys (
    key           text PRIMARY KEY CHECK (char_length(key) BETWEEN 1 AND 255),
    request_hash  text NOT NULL,
    order_id      bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now()
);
