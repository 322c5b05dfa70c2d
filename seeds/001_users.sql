-- Test users. Both log in with the password `password123`, stored as an
-- argon2id hash (m=19456 KiB, t=2, p=1: the Rust argon2 crate's default),
-- never as plain text.
--
-- Every seed statement inserts what is missing and leaves existing rows alone
-- (a developer's hand edits survive), unless `dbctl seed --refresh` sets
-- dbctl.refresh = on, which restores seeded rows to the values below. Rows are
-- matched on natural keys (a user's email, a list's owner and name); only
-- artists, which have none, carry fixed ids (5eed0000-...).

INSERT INTO users (email, password_hash, display_name, email_verified, settings)
VALUES
    ('test@example.com',
     '$argon2id$v=19$m=19456,t=2,p=1$hIDSruxWuB64KZsasIH+hw$S/IYeQrvmOwF+WFJhf5jTCyKtGEA1hK09+ab06Hdk7M',
     'Test User', TRUE, '{"theme": "light"}'),
    ('dev@example.com',
     '$argon2id$v=19$m=19456,t=2,p=1$hbWIp7VAkU3NuDnoIau7hg$fyAA2LbEFUK9nLw9tzULO2Jz/WC8cmPoz2dAQ1cwJVY',
     'Dev User', TRUE, '{"theme": "dark"}')
ON CONFLICT (email) DO UPDATE SET
    password_hash = EXCLUDED.password_hash,
    display_name = EXCLUDED.display_name,
    email_verified = EXCLUDED.email_verified,
    totp_enabled = FALSE,
    totp_secret = NULL,
    settings = EXCLUDED.settings
WHERE current_setting('dbctl.refresh', true) = 'on';
