-- The badge number of each registered device: notifications sent to it since its pubkey was last online.
ALTER TABLE push_registrations ADD COLUMN badge INTEGER NOT NULL DEFAULT 0;
