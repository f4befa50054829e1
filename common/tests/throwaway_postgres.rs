//! The throwaway server really starts, serves queries, gives each test its own database, and
//! is gone after drop.

use lab_common::postgres::{ThrowawayPostgres, connect, create_database};

#[tokio::test]
async fn starts_serves_and_stops() {
    let server = tokio::task::spawn_blocking(ThrowawayPostgres::start)
        .await
        .unwrap()
        .expect("throwaway PostgreSQL starts");
    let url = create_database(&server.admin_url(), "probe").await.unwrap();
    assert!(url.ends_with("/probe"));
    // Idempotent: the run command calls it on every start.
    create_database(&server.admin_url(), "probe").await.unwrap();

    let pool = connect(&url, 2).await.unwrap();
    let answer: i32 = sqlx::query_scalar("SELECT 41 + 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(answer, 42);
    pool.close().await;

    let port = server.port();
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
    let refused = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(refused.is_err(), "server still listening after drop");
}

/// Test databases older than the horizon are dropped; a fresh one, and one in use, are kept.
#[tokio::test]
async fn stale_test_databases_are_dropped_and_fresh_or_busy_ones_kept() {
    use lab_common::postgres::{SCRATCH_DATABASE_PREFIX, drop_stale_scratch_databases};
    use std::time::Duration;

    let server = tokio::task::spawn_blocking(ThrowawayPostgres::start)
        .await
        .unwrap()
        .expect("throwaway PostgreSQL starts");
    let admin = server.admin_url();
    let two_hours_ago = uuid::Timestamp::from_unix(
        uuid::NoContext,
        u64::try_from(chrono::Utc::now().timestamp()).unwrap() - 7200,
        0,
    );
    let name = |id: uuid::Uuid| format!("{SCRATCH_DATABASE_PREFIX}{}", id.simple());
    let stale = name(uuid::Uuid::new_v7(two_hours_ago));
    let busy = name(uuid::Uuid::new_v7(two_hours_ago));
    let fresh = name(uuid::Uuid::now_v7());
    for database in [&stale, &busy, &fresh] {
        create_database(&admin, database).await.unwrap();
    }
    let holding = connect(&lab_common::postgres::with_database(&admin, &busy), 1)
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(&holding).await.unwrap();

    let dropped = drop_stale_scratch_databases(&admin, Duration::from_secs(3600))
        .await
        .unwrap();

    let admin_pool = connect(&admin, 1).await.unwrap();
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname",
    )
    .bind(SCRATCH_DATABASE_PREFIX)
    .fetch_all(&admin_pool)
    .await
    .unwrap();
    assert_eq!(dropped, 1, "only the stale, unused one goes: {left:?}");
    assert!(!left.contains(&stale), "{left:?}");
    assert!(left.contains(&busy) && left.contains(&fresh), "{left:?}");
    holding.close().await;
    admin_pool.close().await;
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}
