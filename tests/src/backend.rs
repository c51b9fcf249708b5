//! Running one test on every backend (SQLite, and PostgreSQL when
//! `TEST_DATABASE_URL` is set): `on_every_backend!` and what it gives tests.

use std::future::Future;

use crate::TestCoordinator;

/// Runs the same test body on every available backend, each in a
/// `sqlite` and a `postgres` module of test functions. What the body is
/// given depends on the form:
/// - `on_every_backend!(a, b)`: a started [`TestCoordinator`];
/// - `on_every_backend!(db: a, b)`: the [`Db`] to use, for tests that start
///   their coordinator themselves (with settings of their own);
/// - `on_every_backend!(with run: a, b)`: whatever `run(db, test)`, a
///   function of the test file, gives `test` (e.g. a store opened directly).
///
/// Without `TEST_DATABASE_URL` the PostgreSQL run says so and passes.
#[macro_export]
macro_rules! on_every_backend {
    (db: $($name:ident),* $(,)?) => {
        $crate::on_every_backend!(@run $crate::backend::given_db; $($name),*);
    };
    (with $run:ident: $($name:ident),* $(,)?) => {
        $crate::on_every_backend!(@run super::$run; $($name),*);
    };
    (@run $run:path; $($name:ident),*) => {
        $crate::on_every_backend!(@sqlite $run; $($name),*);
        $crate::on_every_backend!(@postgres postgres, $run; $($name),*);
    };
    (@sqlite $run:path; $($name:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $run($crate::Db::Sqlite, super::$name).await
                }
            )*
        }
    };
    (@postgres $module:ident, $run:path; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::postgres_url().is_some() {
                        $run($crate::Db::Postgres, super::$name).await
                    } else {
                        eprintln!("TEST_DATABASE_URL is not set: skipping the PostgreSQL run");
                    }
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        $crate::on_every_backend!(@run $crate::backend::given_coordinator; $($name),*);
    };
}

/// Runs tests that need several coordinator replicas on one database,
/// which only PostgreSQL serves (SQLite serves one coordinator), in a
/// `replicas_on_postgres` module; each is given the [`Db`]. Without
/// `TEST_DATABASE_URL` they say so and pass.
#[macro_export]
macro_rules! on_postgres {
    ($($name:ident),* $(,)?) => {
        $crate::on_every_backend!(@postgres replicas_on_postgres, $crate::backend::given_db; $($name),*);
    };
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub fn postgres_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Runs `test` with a coordinator started on `db` (the default form of
/// [`on_every_backend!`](crate::on_every_backend)).
pub async fn given_coordinator<F, Fut>(db: Db, test: F)
where
    F: FnOnce(TestCoordinator) -> Fut,
    Fut: Future<Output = ()>,
{
    test(TestCoordinator::start(db).await).await
}

/// Runs `test` with `db` itself (the `db:` form).
pub async fn given_db<F, Fut>(db: Db, test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    test(db).await
}
