//! The pool's connections carry the configured timeouts.

use std::time::Duration;

use coupon_infra::settings::DatabaseSettings;
use coupon_testkit::TestDatabase;
use diesel_async::RunQueryDsl;

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_statement_is_cancelled_by_the_statement_timeout() {
    let db = TestDatabase::create().await;
    let settings = DatabaseSettings { statement_timeout: Duration::from_millis(300), ..db.settings() };
    let pool = coupon_infra::db::pool(&settings).unwrap();
    let mut conn = pool.get().await.unwrap();
    let err = diesel::sql_query("SELECT pg_sleep(30)").execute(&mut conn).await.unwrap_err();
    assert!(err.to_string().contains("statement timeout"), "{err}");
}
