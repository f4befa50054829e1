//! Unary call overhead of the full resilience stack against the bare tonic channel, over
//! loopback, in one run. Criterion reports the median; a manual loop afterwards measures p50
//! and p99 per call from individual samples (criterion only keeps batch means).
//!
//! `cargo bench -p resilience --bench overhead`

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::StreamBody;
use prost::Message;

use criterion::Criterion;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use lab_proto::order::v1::order_service_server::{OrderService, OrderServiceServer};
use lab_proto::order::v1::*;
use resilience::{ResilienceConfig, ResilientChannel};
use tokio::runtime::Runtime;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

struct Echo;

#[tonic::async_trait]
impl OrderService for Echo {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let quantity = request.into_inner().quantity;
        Ok(Response::new(CreateOrderResponse {
            order: Some(Order {
                quantity,
                ..Order::default()
            }),
        }))
    }

    async fn get_order(
        &self,
        _: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn create_product(
        &self,
        _: Request<CreateProductRequest>,
    ) -> Result<Response<CreateProductResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn get_product(
        &self,
        _: Request<GetProductRequest>,
    ) -> Result<Response<GetProductResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn list_products(
        &self,
        _: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn restock(
        &self,
        _: Request<RestockRequest>,
    ) -> Result<Response<RestockResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn lookup_order(
        &self,
        _: Request<LookupOrderRequest>,
    ) -> Result<Response<LookupOrderResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn list_orders(
        &self,
        _: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn cancel_order(
        &self,
        _: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn get_product_ledger(
        &self,
        _: Request<lab_proto::order::v1::GetProductLedgerRequest>,
    ) -> Result<Response<lab_proto::order::v1::GetProductLedgerResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
}

fn request() -> Request<CreateOrderRequest> {
    let mut request = Request::new(CreateOrderRequest {
        product_id: "0190b2a4-0000-7000-8000-000000000001".into(),
        quantity: 1,
        customer_id: "0190b2a4-0000-7000-8000-000000000002".into(),
    });
    request
        .metadata_mut()
        .insert("idempotency-key", "bench-key".parse().unwrap());
    request
}

struct Clients {
    bare: OrderServiceClient<Channel>,
    stack: OrderServiceClient<ResilientChannel>,
}

fn setup(rt: &Runtime) -> Clients {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            Server::builder()
                .add_service(OrderServiceServer::new(Echo))
                .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
        );
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
        // One connection each, so neither path shares the other's HTTP/2 streams.
        let bare = OrderServiceClient::new(endpoint.connect().await.unwrap());
        let (stack, _breaker) = ResilientChannel::builder(ResilienceConfig::default())
            .build(endpoint.connect().await.unwrap());
        let mut clients = Clients {
            bare,
            stack: OrderServiceClient::new(stack),
        };
        clients.bare.create_order(request()).await.unwrap();
        clients.stack.create_order(request()).await.unwrap();
        clients
    })
}

fn criterion_benches(c: &mut Criterion, rt: &Runtime, clients: &Clients) {
    let mut group = c.benchmark_group("unary_call");
    group.bench_function("bare_channel", |b| {
        b.to_async(rt).iter(|| {
            // A generated client is cloned per request in real services; do the same.
            let mut client = clients.bare.clone();
            async move { client.create_order(request()).await.unwrap() }
        })
    });
    group.bench_function("resilient_stack", |b| {
        b.to_async(rt).iter(|| {
            let mut client = clients.stack.clone();
            async move { client.create_order(request()).await.unwrap() }
        })
    });
    // Two reference points for what any deadline costs, stack or not: a client-side timer
    // around the bare call, and a `grpc-timeout` the server then enforces with its own timer.
    group.bench_function("bare_with_client_timer", |b| {
        b.to_async(rt).iter(|| {
            let mut client = clients.bare.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(2), client.create_order(request()))
                    .await
                    .unwrap()
                    .unwrap()
            }
        })
    });
    group.bench_function("bare_with_grpc_timeout", |b| {
        b.to_async(rt).iter(|| {
            let mut client = clients.bare.clone();
            async move {
                let mut request = request();
                request.set_timeout(Duration::from_secs(2));
                client.create_order(request).await.unwrap()
            }
        })
    });
    group.finish();
}

/// The same generated client over an in-process service that answers at once: no network, so
/// the difference is the stack's own CPU cost per call.
fn in_process(c: &mut Criterion, rt: &Runtime) {
    type Answer = std::future::Ready<Result<http::Response<tonic::body::Body>, Infallible>>;
    fn answer(_: http::Request<tonic::body::Body>) -> Answer {
        let message = CreateOrderResponse {
            order: Some(Order::default()),
        }
        .encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from(framed))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = tonic::body::Body::new(StreamBody::new(tokio_stream::iter(frames)));
        let mut response = http::Response::new(body);
        response.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        std::future::ready(Ok(response))
    }
    let bare = OrderServiceClient::new(tower::service_fn(answer));
    let (stack, _) =
        ResilientChannel::builder(ResilienceConfig::default()).build(tower::service_fn(answer));
    let stack = OrderServiceClient::new(stack);
    let mut group = c.benchmark_group("in_process_call");
    group.bench_function("bare_service", |b| {
        b.to_async(rt).iter(|| {
            let mut client = bare.clone();
            async move { client.create_order(request()).await.unwrap() }
        })
    });
    group.bench_function("resilient_stack", |b| {
        b.to_async(rt).iter(|| {
            let mut client = stack.clone();
            async move { client.create_order(request()).await.unwrap() }
        })
    });
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[derive(Clone, Copy)]
enum Path {
    Bare,
    BareWithGrpcTimeout,
    Stack,
}

async fn one_call(clients: &Clients, path: Path) -> Duration {
    let mut request = request();
    let started = Instant::now();
    match path {
        Path::Bare => drop(clients.bare.clone().create_order(request).await.unwrap()),
        Path::BareWithGrpcTimeout => {
            request.set_timeout(Duration::from_secs(2));
            drop(clients.bare.clone().create_order(request).await.unwrap())
        }
        Path::Stack => drop(clients.stack.clone().create_order(request).await.unwrap()),
    }
    started.elapsed()
}

/// Per-call samples, round-robin over the paths so noise from a shared machine hits all alike.
fn sampled(rt: &Runtime, clients: &Clients, per_path: usize) {
    let paths = [
        ("bare_channel", Path::Bare),
        ("bare_grpc_timeout", Path::BareWithGrpcTimeout),
        ("resilient_stack", Path::Stack),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(per_path); paths.len()];
    rt.block_on(async {
        for _ in 0..per_path {
            for (i, (_, path)) in paths.iter().enumerate() {
                samples[i].push(one_call(clients, *path).await);
            }
        }
    });
    println!("\nper-call samples (sequential, {per_path} calls per path):");
    for ((name, _), s) in paths.iter().zip(samples.iter_mut()) {
        s.sort();
        println!(
            "{name:<18} n={} p50={:>8.1?} p99={:>8.1?} p99.9={:>8.1?}",
            s.len(),
            percentile(s, 0.50),
            percentile(s, 0.99),
            percentile(s, 0.999)
        );
    }
    let stack = &samples[2];
    for (i, base) in [(0, "bare_channel"), (1, "bare_grpc_timeout")] {
        let reference = &samples[i];
        let ratio = |p| percentile(stack, p).as_secs_f64() / percentile(reference, p).as_secs_f64();
        let added =
            |p| (percentile(stack, p).as_secs_f64() - percentile(reference, p).as_secs_f64()) * 1e6;
        println!(
            "stack vs {base}: p50 {:.3}x ({:+.1} us), p99 {:.3}x ({:+.1} us)",
            ratio(0.5),
            added(0.5),
            ratio(0.99),
            added(0.99)
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let clients = setup(&rt);
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    criterion_benches(&mut criterion, &rt, &clients);
    in_process(&mut criterion, &rt);
    criterion.final_summary();
    // `cargo test --benches` runs this binary without `--bench`: skip the long sampling there.
    if std::env::args().any(|arg| arg == "--bench") {
        sampled(&rt, &clients, 20_000);
    }
}
