//! Each backend's schema migrations, embedded in the binary. sqlx's `migrate!` embeds them too, but its proc macro
//! brings a second build of sqlx, of both database drivers and of SQLite's C source into every cold build (minutes
//! of CI on two cores). The versions, descriptions and checksums here are those `migrate!` gave the same files, so
//! a database it migrated goes on as before.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// A migration file's name (`<version>_<description>.sql`) and its text.
type File = (&'static str, &'static str);

/// `files` of one folder, by name and text (`include_str!`), in any order.
macro_rules! files {
    ($folder:literal: $($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../migrations/", $folder, "/", $name)))),*]
    };
}

pub(super) const SQLITE: &[File] = files!("sqlite":
    "0001_events.sql",
    "0002_push.sql",
    "0003_deletion_expiration.sql",
    "0004_jobs.sql",
    "0005_badges.sql",
    "0006_upstream_leases.sql",
    "0007_moderation.sql",
    "0008_push_options.sql",
    "0009_tags_without_rowid.sql",
    "0010_search.sql",
    "0011_event_group.sql",
    "0012_search_backlog.sql",
    "0013_sightings.sql",
);

pub(super) const POSTGRES: &[File] = files!("postgres":
    "0001_schema.sql",
    "0002_moderation.sql",
    "0003_nodes.sql",
    "0004_push_options.sql",
    "0005_search.sql",
    "0006_event_group.sql",
    "0007_sightings.sql",
);

/// The migrator for one backend's files, as sqlx's folder reader would build it: the version before the first `_`,
/// the rest less `.sql` with spaces for `_` as the description, no transaction if the text starts so.
pub(super) fn migrator(files: &[File]) -> Migrator {
    let migrations = files
        .iter()
        .map(|&(name, sql)| {
            let (version, rest) = name.split_once('_').expect("migration names are <version>_<description>.sql");
            let version = version.parse().expect("a migration's version is a number");
            let description = rest.trim_end_matches(".sql").replace('_', " ");
            let no_tx = sql.starts_with("-- no-transaction");
            Migration::new(version, Cow::Owned(description), MigrationType::Simple, sql.into_sql_str(), no_tx)
        })
        .collect();
    Migrator::with_migrations(migrations)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in each folder is embedded (a new migration added to the folder but not here would never run).
    #[test]
    fn every_migration_file_is_embedded() {
        for (folder, files) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let path = format!("{}/migrations/{folder}", env!("CARGO_MANIFEST_DIR"));
            let mut on_disk: Vec<String> =
                std::fs::read_dir(path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            on_disk.sort();
            let embedded: Vec<String> = files.iter().map(|(name, _)| name.to_string()).collect();
            assert_eq!(embedded, on_disk, "{folder}");
        }
    }

    /// The description and version sqlx's folder reader gives a name.
    #[test]
    fn names_give_sqlx_versions_and_descriptions() {
        let migrator = migrator(&[("0003_deletion_expiration.sql", "SELECT 1;")]);
        let migration = &migrator.migrations[0];
        assert_eq!((migration.version, migration.description.as_ref()), (3, "deletion expiration"));
        assert!(!migration.no_tx);
    }
}
