//! What grpcurl and load balancers rely on: reflection (v1 and v1alpha), health, request ids,
//! paging.

use lab_proto::order::v1 as pb;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1 as reflection_v1;
use tonic_reflection::pb::v1alpha as reflection_v1alpha;
use uuid::Uuid;

use crate::helpers::{TestShop, client_channel as channel, order_request, shared};

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services_and_describe_the_rpcs() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let channel = channel(&shop).await;

    let mut v1 =
        reflection_v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = reflection_v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            reflection_v1::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = v1
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(reflection_v1::server_reflection_response::MessageResponse::ListServicesResponse(
        list,
    )) = response.message_response
    else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"lab.order.v1.OrderService"), "{names:?}");
    assert!(names.contains(&"lab.order.v1.OpsService"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    let mut v1alpha =
        reflection_v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let orders = v1alpha_files(&mut v1alpha, "lab.order.v1.OrderService").await;
    for rpc in [
        "CreateProduct",
        "GetProduct",
        "Restock",
        "CreateOrder",
        "GetOrder",
        "LookupOrder",
        "ListOrders",
        "CancelOrder",
    ] {
        assert!(orders.contains(rpc), "{rpc} missing from reflection");
    }
    let ops = v1alpha_files(&mut v1alpha, "lab.order.v1.OpsService").await;
    assert!(ops.contains("ListAuditEvents"), "ListAuditEvents missing");
    // The event's own file, which OpsService's imports: grpcurl needs it to describe the answer.
    let event = v1alpha_files(&mut v1alpha, "lab.audit.v1.AuditEvent").await;
    assert!(event.contains("request_id"), "AuditEvent not described");
    shop.stop().await;
}

/// The files reflection v1alpha serves for `symbol`, as lossy text to search.
async fn v1alpha_files(
    client: &mut reflection_v1alpha::server_reflection_client::ServerReflectionClient<Channel>,
    symbol: &str,
) -> String {
    let request = reflection_v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            reflection_v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                symbol.into(),
            ),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(
        reflection_v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(
            files,
        ),
    ) = response.message_response
    else {
        panic!("unexpected reflection answer for {symbol}");
    };
    String::from_utf8_lossy(&files.file_descriptor_proto.concat()).into_owned()
}

#[tokio::test]
async fn health_answers_serving() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let mut health = HealthClient::new(channel(&shop).await);
    for service in ["", "lab.order.v1.OrderService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    shop.stop().await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let mut client = shop.client.clone();
    let mut request = tonic::Request::new(pb::ListProductsRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "trace-me-42".parse().unwrap());
    let response = client.list_products(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "trace-me-42"
    );
    let response = client
        .list_products(pb::ListProductsRequest::default())
        .await
        .unwrap();
    let made = response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(Uuid::parse_str(made).is_ok(), "made id {made} is a UUID");
    shop.stop().await;
}

#[tokio::test]
async fn list_orders_pages_through_everything_once_and_filters() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(20).await;
    let other = shop.create_product(20).await;
    let mut client = shop.client.clone();
    let mut created = Vec::new();
    for n in 0..7 {
        let order = client
            .create_order(order_request(
                &product.product_id,
                1,
                Uuid::now_v7(),
                &format!("page-{n}"),
            ))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        created.push(order.order_id);
    }
    client
        .create_order(order_request(
            &other.product_id,
            1,
            Uuid::now_v7(),
            "elsewhere",
        ))
        .await
        .unwrap();
    client
        .cancel_order(pb::CancelOrderRequest {
            order_id: created[0].clone(),
            reason: String::new(),
        })
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_orders(pb::ListOrdersRequest {
                product_id: product.product_id.clone(),
                page_size: 3,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.orders.len() <= 3);
        seen.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, created, "every order once, oldest first");

    let cancelled = client
        .list_orders(pb::ListOrdersRequest {
            status: pb::OrderStatus::Cancelled as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.orders.len(), 1);
    assert_eq!(cancelled.orders[0].order_id, created[0]);

    let by_client =
        |client_id: &str, created_after: Option<prost_types::Timestamp>| pb::ListOrdersRequest {
            client_id: client_id.into(),
            created_after,
            ..Default::default()
        };
    let mine = client
        .list_orders(by_client("anonymous", None))
        .await
        .unwrap();
    assert_eq!(mine.into_inner().orders.len(), 8);
    let theirs = client
        .list_orders(by_client("someone-else", None))
        .await
        .unwrap();
    assert!(theirs.into_inner().orders.is_empty());
    let future = prost_types::Timestamp {
        seconds: 4_102_444_800,
        nanos: 0,
    };
    let later = client
        .list_orders(by_client("", Some(future)))
        .await
        .unwrap();
    assert!(later.into_inner().orders.is_empty());
    let past = prost_types::Timestamp::default();
    let all = client.list_orders(by_client("", Some(past))).await.unwrap();
    assert_eq!(all.into_inner().orders.len(), 8);
    shop.stop().await;
}
