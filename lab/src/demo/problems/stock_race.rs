//! `stock-race`: many buyers at once for a few units. Unsafe: the naive read-check-write on
//! order-svc's database; safe: the same buyers through real order-svc's CreateOrder.

use std::sync::Arc;
use std::time::Duration;

use lab_drill::load::{self, Outcomes};
use lab_proto::order::v1 as order_pb;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::demo::naive;
use crate::demo::setup::{self, DEMO_CLIENT_ID, Side};

const STOCK: i64 = 20;
const BUYERS: usize = 60;

/// The naive run.
pub(super) async fn unsafe_run() -> anyhow::Result<Side> {
    let cluster = setup::cluster().await?;
    let product = setup::product(&cluster, STOCK).await?;
    let product_id = uuid::Uuid::parse_str(&product)?;
    let db = setup::pool(cluster.order.database_url(), 24).await?;
    let barrier = Arc::new(Barrier::new(BUYERS));
    let mut buyers = JoinSet::new();
    for _ in 0..BUYERS {
        let (db, barrier) = (db.clone(), barrier.clone());
        buyers.spawn(async move {
            barrier.wait().await;
            naive::shop::buy(&db, product_id, 1, Duration::from_millis(2)).await
        });
    }
    let mut outcomes = Outcomes::default();
    while let Some(joined) = buyers.join_next().await {
        match joined? {
            Ok(true) => outcomes.add("ordered", 1),
            Ok(false) => outcomes.add("refused/out-of-stock", 1),
            Err(_) => outcomes.add("error/database", 1),
        }
    }
    side(&cluster, &product, outcomes).await
}

/// The real run.
pub(super) async fn safe_run() -> anyhow::Result<Side> {
    let cluster = setup::cluster().await?;
    let product = setup::product(&cluster, STOCK).await?;
    let barrier = Arc::new(Barrier::new(BUYERS));
    let mut buyers = JoinSet::new();
    for _ in 0..BUYERS {
        let (shop, barrier, product) = (cluster.order_client(), barrier.clone(), product.clone());
        buyers.spawn(async move {
            barrier.wait().await;
            let request = order_pb::CreateOrderRequest {
                product_id: product,
                quantity: 1,
                customer_id: uuid::Uuid::now_v7().to_string(),
            };
            let key = setup::fresh_key();
            setup::create_order(
                shop,
                DEMO_CLIENT_ID,
                &key,
                request,
                Some(Duration::from_secs(10)),
            )
            .await
        });
    }
    let mut outcomes = Outcomes::default();
    while let Some(joined) = buyers.join_next().await {
        match joined? {
            Ok(_) => outcomes.add("ordered", 1),
            Err(status) => outcomes.add(&format!("refused/{}", load::code_name(status.code())), 1),
        }
    }
    side(&cluster, &product, outcomes).await
}

async fn side(
    cluster: &lab_drill::cluster::Cluster,
    product: &str,
    outcomes: Outcomes,
) -> anyhow::Result<Side> {
    let left = load::product(&mut cluster.order_client(), product)
        .await?
        .stock;
    let report = setup::verdict(cluster, Duration::ZERO, Vec::new()).await?;
    Ok(Side {
        happened: vec![
            format!("{BUYERS} buyers at once for {STOCK} units"),
            setup::tally_line("buyers", &outcomes),
            format!(
                "{} orders placed, stock left {left} (so {} taken)",
                outcomes.get("ordered"),
                STOCK - left
            ),
        ],
        report,
        p99_ms: None,
        max_in_flight: None,
    })
}
