//! PostgreSQL for tests: each test gets its own database on the server `TEST_DATABASE_URL` names (scripts/test
//! makes sure one runs), dropped when the test ends, so tests run in parallel. Without the variable, a test that
//! needs PostgreSQL fails and says how to provide one: it never passes silently.

use std::future::Future;
use std::sync::Arc;

use sqlx::{Connection, PgConnection};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    static BACKEND: Backend;
}

/// The backend relays started by the current test use (SQLite unless the test runs inside `on_postgres`).
pub(crate) fn current_backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite)
}

/// Runs a test body with every relay it starts on a fresh PostgreSQL database.
pub(crate) async fn on_postgres<F: Future>(test: F) -> F::Output {
    BACKEND.scope(Backend::Postgres, test).await
}

/// Generates, for each named `async fn` test body, a module with two tests: `sqlite` and `postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn sqlite() {
                super::$test().await
            }

            #[tokio::test]
            async fn postgres() {
                $crate::common::postgres::on_postgres(super::$test()).await
            }
        }
    )*};
}

/// A database of its own on the test server, dropped (with its connections) when the last handle goes.
pub(crate) struct PgDatabase {
    pub url: String,
    name: String,
    server: String,
}

impl PgDatabase {
    pub(crate) async fn create() -> Arc<Self> {
        let server = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "this test needs PostgreSQL: set TEST_DATABASE_URL=postgres://USER@HOST:PORT/DB (scripts/test starts \
                 or installs a server on 127.0.0.1:5432 and sets it)"
            )
        });
        let name = format!("pushrelay_test_{:016x}", rand::random::<u64>());
        let mut admin =
            PgConnection::connect(&server).await.unwrap_or_else(|e| panic!("TEST_DATABASE_URL {server}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
        let mut url = url::Url::parse(&server).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        Arc::new(Self { url: url.to_string(), name, server })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread of its own does the work.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
                let mut admin = PgConnection::connect(&server).await?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.map(|_| ())
            })
        });
        if let Ok(Err(e)) = dropped.join() {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}
