//! Prometheus metrics, the same way in every service: a `prometheus-client`
//! [`Registry`] whose names start with `writeback_`, the process's own figures
//! (CPU seconds, resident memory, open files, start time), and [`serve`], a
//! plain-HTTP listener (axum) answering `GET /metrics` in the OpenMetrics text
//! format. Each service registers its own metrics and starts the listener only
//! when its `metrics_listen` is set — off by default; bind it to loopback or a
//! management network, since the figures are not authenticated.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A registry whose metrics are `writeback_…`, with the process collector
/// registered.
pub fn registry() -> Registry {
    let mut r = Registry::with_prefix("writeback");
    r.register_collector(Box::new(ProcessCollector));
    r
}

/// Labels by operation kind (reset, change, forced_change, unlock).
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct KindLabels {
    /// The operation kind.
    pub kind: String,
}

/// A latency histogram in seconds: 0.5 ms to ~65 s, doubling.
pub fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Serves `GET /metrics` from `registry` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = Arc::clone(&registry);
            async move { render(&registry) }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` and serves metrics in the background; the address bound.
pub async fn spawn(
    addr: SocketAddr,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve(listener, registry, shutdown).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    tracing::info!(%bound, "serving Prometheus metrics on /metrics");
    Ok(bound)
}

/// Stops a listener started by [`spawn_guarded`] when dropped.
#[derive(Debug)]
pub struct Listening {
    /// The address bound.
    pub addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// [`spawn`], stopped when the returned guard is dropped (with the service
/// that owns it).
pub async fn spawn_guarded(
    addr: SocketAddr,
    registry: Arc<Registry>,
) -> std::io::Result<Listening> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = spawn(addr, registry, async move {
        let _ = stopped.await;
    })
    .await?;
    Ok(Listening { addr, _stop: stop })
}

fn render(registry: &Registry) -> axum::response::Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The process's figures from `/proc/self`, read at each scrape. Written by hand:
/// prometheus-client has no process collector, and these four values are a few
/// lines of `/proc` (Linux only; elsewhere nothing is reported).
#[derive(Debug)]
struct ProcessCollector;

/// `/proc/self/stat` after the command name: (utime + stime in ticks,
/// starttime in ticks since boot, RSS in pages).
fn proc_stat() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14, 15, 22 and 24 (1-based) of the whole line.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((ticks, f.get(19)?.parse().ok()?, f.get(21)?.parse().ok()?))
}

fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Kernel clock ticks per second and page size: the values of every Linux on
/// the architectures we build for (USER_HZ is fixed at 100 for user space).
const TICKS: f64 = 100.0;
const PAGE: u64 = 4096;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((ticks, start, rss)) = proc_stat() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(ticks as f64 / TICKS);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new((rss * PAGE) as f64);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory, in bytes.",
            None,
            rss.metric_type(),
        )?)?;
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            let open = ConstGauge::new(fds.count() as f64);
            open.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors.",
                None,
                open.metric_type(),
            )?)?;
        }
        if let Some(btime) = boot_time() {
            let started = ConstGauge::new(btime as f64 + start as f64 / TICKS);
            started.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
                None,
                started.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn the_text_has_our_prefix_and_the_process() {
        let mut r = registry();
        let c = Counter::<u64>::default();
        r.register("things", "Things counted.", c.clone());
        c.inc_by(3);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(text.contains("writeback_things_total 3"), "{text}");
        assert!(
            text.contains("writeback_process_cpu_seconds_total"),
            "{text}"
        );
        assert!(
            text.contains("writeback_process_resident_memory_bytes"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
