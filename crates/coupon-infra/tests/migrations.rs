//! The schema's migrations on a real PostgreSQL.

use coupon_testkit::TestDatabase;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    table_name: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_apply_on_an_empty_database_and_rerun_as_a_no_op() {
    let db = TestDatabase::create_empty().await;

    let first = coupon_infra::db::migrate(db.url()).await.unwrap();
    assert!(!first.is_empty(), "an empty database gets every migration");
    let second = coupon_infra::db::migrate(db.url()).await.unwrap();
    assert!(second.is_empty(), "a rerun applies nothing, got {second:?}");

    let mut conn = db.connect().await;
    let mut tables: Vec<String> = diesel::sql_query(
        "SELECT table_name::text AS table_name FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_\\_%'",
    )
    .load::<TableName>(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|t| t.table_name)
    .collect();
    tables.sort();
    assert_eq!(
        tables,
        [
            "admin_audit",
            "coupon",
            "coupon_control",
            "coupon_creation",
            "coupon_usage_outbox",
            "customer_coupon",
            "released_order",
            "revoked_issuance",
            "sold_out_at_write"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_migrators_apply_each_migration_once() {
    let db = TestDatabase::create_empty().await;
    // Each on a task of its own: the migration harness blocks its thread
    // (block_in_place), and two migrators joined in one task on the test's
    // own thread could lose the other's wake-up and hang.
    let migrator = || {
        let url = db.url().to_string();
        tokio::spawn(async move { coupon_infra::db::migrate(&url).await })
    };
    let (a, b) = tokio::join!(migrator(), migrator());
    let applied = a.unwrap().unwrap().len() + b.unwrap().unwrap().len();
    let embedded = MigrationSource::<Pg>::migrations(&coupon_infra::db::MIGRATIONS).unwrap().len();
    assert_eq!(applied, embedded);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schema_enforces_the_coupon_invariants() {
    let db = TestDatabase::create().await;
    let mut conn = db.connect().await;
    let insert = |remaining: i32| {
        format!(
            "INSERT INTO coupon (name, total_quantity, remaining_quantity, starts_at, ends_at) \
             VALUES ('c', 10, {remaining}, now(), now() + interval '1 day')"
        )
    };
    assert!(diesel::sql_query(insert(-1)).execute(&mut conn).await.is_err(), "remaining below 0");
    assert!(diesel::sql_query(insert(11)).execute(&mut conn).await.is_err(), "remaining above total");
    diesel::sql_query(insert(10)).execute(&mut conn).await.unwrap();

    let grant = "INSERT INTO customer_coupon (coupon_id, customer_id, issued_at) \
                 SELECT id, 7, now() FROM coupon";
    diesel::sql_query(grant).execute(&mut conn).await.unwrap();
    assert!(diesel::sql_query(grant).execute(&mut conn).await.is_err(), "a customer holds a coupon once");

    let rows =
        diesel::sql_query("SELECT count(*) AS n FROM customer_coupon").get_result::<Count>(&mut conn).await.unwrap();
    assert_eq!(rows.n, 1);
}
