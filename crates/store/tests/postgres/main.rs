//! The PostgreSQL store against a real server. Each test creates its own database
//! (`parley_test_<uuid>`) on the server that `PARLEY_TEST_POSTGRES_URL` names, and drops it after.
//! Without that variable the tests say so and pass, except on CI (`CI=true`), where they fail.

mod messages;
mod queue;
mod schema;
mod support;
