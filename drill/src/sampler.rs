//! STUB of the drill sampler (the "report" helper owns this file and replaces it at merge): the
//! interface of `helpers/DRILL_INTERFACE.md`, sampling only the load's own tally.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;

use crate::report::Sample;

/// What the drill's load driver records per answered call (Clone = shared).
#[derive(Clone, Default, Debug)]
pub struct LiveTally {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl LiveTally {
    /// Records one answer.
    pub fn record(&self, label: &str, _latency: Duration) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(label.to_owned())
            .or_default() += 1;
    }
}

/// Where samples come from.
pub struct SampleSources {
    /// `/metrics` URLs of the approval-svc instances.
    pub approval_metrics: Vec<String>,
    /// approval-svc.
    pub approval: ApprovalServiceClient<Channel>,
    /// order-svc.
    pub order: OrderServiceClient<Channel>,
    /// The drill's products.
    pub product_ids: Vec<String>,
    /// The load's tally.
    pub tally: LiveTally,
}

/// A running sampler.
pub struct SamplerHandle {
    task: tokio::task::JoinHandle<Vec<Sample>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// Samples every `interval` until finished.
pub fn spawn(sources: SampleSources, interval: Duration) -> SamplerHandle {
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut samples = Vec::new();
        loop {
            tokio::select! {
                _ = &mut stopped => return samples,
                () = tokio::time::sleep(interval) => {}
            }
            let outcomes = sources
                .tally
                .counts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            samples.push(Sample {
                t_s: started.elapsed().as_secs_f64(),
                outcomes,
                ..Sample::default()
            });
        }
    });
    SamplerHandle { task, stop }
}

impl SamplerHandle {
    /// Stops sampling and returns the samples.
    pub async fn finish(self) -> Vec<Sample> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}
