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
