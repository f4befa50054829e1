//! The sampler against fake sources, no services: an in-process `/metrics` server whose page
//! the test changes (and breaks, and "restarts"), one that always answers 500, one that refuses
//! connections, and gRPC clients pointing at nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab_drill::sampler::{self, LiveTally, SampleSources};
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// A fake `/metrics` endpoint: answers each request with `page`, or 500 while `page` is `None`.
struct FakeMetrics {
    url: String,
    page: Arc<Mutex<Option<String>>>,
    /// Requests answered so far with the current page (reset by `set`).
    served: Arc<AtomicU64>,
}

impl FakeMetrics {
    async fn start(page: Option<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let page = Arc::new(Mutex::new(page));
        let served = Arc::new(AtomicU64::new(0));
        let (page_, served_) = (page.clone(), served.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let (page, served) = (page_.clone(), served_.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = page.lock().unwrap().clone();
                    let response = match body {
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                             Connection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\
                                 Connection: close\r\n\r\n"
                            .to_owned(),
                    };
                    let _ = stream.write_all(response.as_bytes()).await;
                    served.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self { url, page, served }
    }

    fn set(&self, page: Option<String>) {
        *self.page.lock().unwrap() = page;
        self.served.store(0, Ordering::SeqCst);
    }

    /// Waits until `n` requests were answered since the last `set`.
    async fn wait_served(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.served.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "the sampler stopped scraping");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn page(calls: u64, attempts: u64, retries: u64, breaker: u8) -> Option<String> {
    Some(format!(
        "# TYPE resilience_calls_total counter\n\
         resilience_calls_total{{client=\"order-svc\",code=\"OK\"}} {calls}\n\
         resilience_attempts_total{{client=\"order-svc\"}} {attempts}\n\
         resilience_retries_total{{client=\"order-svc\"}} {retries}\n\
         resilience_breaker_state{{client=\"order-svc\"}} {breaker}\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_scrape_keeps_the_previous_value_and_a_restart_does_not_go_back() {
    let healthy = FakeMetrics::start(page(8, 10, 2, 1)).await;
    let broken = FakeMetrics::start(None).await;
    // Nothing listens on port 1: gRPC reads fail (refused), and so does this scrape.
    let nowhere = Channel::from_static("http://127.0.0.1:1").connect_lazy();
    let tally = LiveTally::default();
    let started = Instant::now();
    let handle = sampler::spawn_since(
        SampleSources {
            approval_metrics: vec![
                healthy.url.clone(),
                broken.url.clone(),
                "http://127.0.0.1:1/metrics".to_owned(),
            ],
            approval: ApprovalServiceClient::new(nowhere.clone()),
            order: OrderServiceClient::new(nowhere),
            product_ids: vec!["0193a1b2-0000-7000-8000-000000000001".to_owned()],
            tally: tally.clone(),
        },
        Duration::from_millis(40),
        started,
    );
    let recorders: Vec<_> = (0..4)
        .map(|_| {
            let tally = tally.clone();
            tokio::spawn(async move {
                for i in 0..250 {
                    tally.record("APPROVED", Duration::from_millis(1 + i % 5));
                    if i % 50 == 0 {
                        tally.record("error/UNAVAILABLE", Duration::from_millis(900));
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    healthy.wait_served(3).await;
    broken.wait_served(3).await;

    // The instance goes away: its scrapes fail from here on.
    healthy.set(None);
    let outage_from = started.elapsed().as_secs_f64();
    healthy.wait_served(5).await;
    let outage_to = started.elapsed().as_secs_f64();
    // It comes back restarted: its counters start again from zero.
    healthy.set(page(1, 3, 1, 0));
    healthy.wait_served(3).await;
    for recorder in recorders {
        recorder.await.unwrap();
    }
    let samples = handle.finish().await;

    assert!(
        samples.windows(2).all(|w| w[0].t_s < w[1].t_s),
        "samples in time order"
    );
    let during: Vec<_> = samples
        .iter()
        .filter(|s| s.t_s > outage_from + 0.05 && s.t_s < outage_to)
        .collect();
    assert!(
        during.len() >= 2,
        "the sampler kept sampling through the outage"
    );
    for sample in &during {
        assert_eq!(
            (
                sample.order_calls,
                sample.attempts,
                sample.retries,
                sample.breaker_state
            ),
            (8, 10, 2, 1),
            "a failed scrape keeps the previous value (t = {})",
            sample.t_s
        );
    }
    for pair in samples.windows(2) {
        assert!(
            pair[1].attempts >= pair[0].attempts,
            "counters never go back"
        );
    }
    let last = samples.last().unwrap();
    assert_eq!(
        (
            last.order_calls,
            last.attempts,
            last.retries,
            last.breaker_state
        ),
        (9, 13, 3, 0),
        "the restarted instance's counts add to what it had counted"
    );
    assert_eq!(last.outcomes["APPROVED"], 1000);
    assert_eq!(last.outcomes["error/UNAVAILABLE"], 20);
    assert!(samples.iter().any(|s| s.latency_p99_ms.is_some()));
    // Sources that never answered leave their initial values.
    assert_eq!(last.stock, None);
    assert!(last.challenges_by_state.is_empty());
    assert_eq!(last.dead_letters, 0);
}
