//! Logs (human-readable for a terminal, JSON lines for a log pipeline) and, when
//! `CC_OTLP_ENDPOINT` is set, traces exported over OTLP/HTTP.
//!
//! Spans are `tracing` spans named after the hop they time (`http request`, `command`,
//! `eventstore append`, `relay publish`, ...; see docs/operations.md). Logs never show them,
//! so log lines read the same with traces on or off; the OpenTelemetry layer sees only the
//! product's own spans (targets `cc_*` and `callcenter`), never a library's.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::LogFormat;

/// Where and as whom traces go.
#[derive(Debug, Clone, Default)]
pub struct Traces {
    /// The OTLP/HTTP endpoint (`http://collector:4318`; `/v1/traces` is added when the URL has
    /// no path). `None`: no traces.
    pub endpoint: Option<String>,
    /// `service.name` of this process's spans.
    pub service_name: String,
}

/// Keeps the trace exporter of the process; [`Telemetry::shutdown`] sends what is still
/// buffered.
#[must_use]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the trace exporter (blocking: call it once, on the way out).
    pub async fn shutdown(self) {
        if let Some(p) = self.provider {
            let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        }
    }
}

/// Installs the global subscriber. `filter` is a tracing filter such as `info`.
pub fn init(format: LogFormat, filter: &str) {
    let _ = init_with_traces(format, filter, &Traces::default());
}

/// As [`init`], with the traces of `traces` (must run inside the Tokio runtime).
pub fn init_with_traces(format: LogFormat, filter: &str, traces: &Traces) -> Telemetry {
    // PostgreSQL's notices ("relation already exists, skipping") are noise at info level.
    let filter = format!("{filter},sqlx::postgres::notice=warn");
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = filter.and(filter_fn(|m| !m.is_span()));
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_target(true)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(logs)
            .boxed(),
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_filter(logs)
            .boxed(),
    };
    let (provider, otel) = match traces.endpoint.as_deref().map(|e| exporter(e, traces)) {
        Some(Ok(provider)) => {
            let tracer = provider.tracer("callcenter");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter_fn(|m| {
                    m.is_span()
                        && (m.target().starts_with("cc_") || m.target().starts_with("callcenter"))
                }));
            (Some(provider), Some(layer))
        }
        Some(Err(e)) => {
            eprintln!("traces are off: {e}");
            (None, None)
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    if let (Some(_), Some(e)) = (&provider, &traces.endpoint) {
        tracing::info!(endpoint = %e, service = %traces.service_name, "exporting traces over OTLP/HTTP");
    }
    Telemetry { provider }
}

fn exporter(endpoint: &str, traces: &Traces) -> Result<SdkTracerProvider, String> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| format!("CC_OTLP_ENDPOINT {endpoint:?} is not a URL: {e}"))?;
    let url = if url.path() == "/" || url.path().is_empty() {
        url.join("v1/traces").map_err(|e| e.to_string())?
    } else {
        url
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Client {
            client,
            runtime: tokio::runtime::Handle::current(),
        })
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url.to_string())
        .build()
        .map_err(|e| format!("the OTLP exporter could not start: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(traces.service_name.clone())
                .build(),
        )
        .build())
}

/// The exporter's HTTP client: the product's reqwest client, run on the process's Tokio
/// runtime (the SDK's batch exporter calls it from a thread of its own).
#[derive(Debug)]
struct Client {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<bytes::Bytes>,
    ) -> Result<opentelemetry_http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))?;
        let client = self.client.clone();
        self.runtime
            .spawn(async move {
                let r = client.execute(request).await?;
                let mut response = opentelemetry_http::Response::builder().status(r.status());
                for (k, v) in r.headers() {
                    response = response.header(k, v);
                }
                let body = r.bytes().await?;
                Ok::<_, opentelemetry_http::HttpError>(response.body(body)?)
            })
            .await?
    }
}
