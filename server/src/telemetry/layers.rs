//! Request metrics of the edges: a tower layer on the tonic server (calls by
//! method and status code, duration histograms) and an axum middleware for the
//! HTTP routes.
//!
//! The gRPC status of a call is read where gRPC puts it: in the response
//! headers of a trailers-only answer (errors raised before any message), else
//! in the trailers at the end of the body. A body dropped before its trailers
//! (the client went away) counts as `CANCELLED`. Methods not in the served
//! descriptor sets are counted under `method="other"`, so a client cannot grow
//! the label set.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body, Frame, SizeHint};
use metrics::{Counter, Histogram};
use prost::Message;

/// gRPC status code names, indexed by code (0..=16).
pub(crate) const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CODE_CANCELLED: usize = 1;
const CODE_UNKNOWN: usize = 2;

/// The method label of paths outside the served descriptor sets.
pub(crate) const OTHER_METHOD: &str = "other";

/// Metric handles of one gRPC method, created on first use.
#[derive(Debug)]
struct MethodHandles {
    label: String,
    duration: OnceLock<Histogram>,
    codes: [OnceLock<Counter>; 17],
}

impl MethodHandles {
    fn new(label: String) -> Self {
        MethodHandles {
            label,
            duration: OnceLock::new(),
            codes: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn finish(&self, code: usize, started: Instant) {
        let code = code.min(GRPC_CODES.len() - 1);
        self.codes[code]
            .get_or_init(|| {
                metrics::counter!(
                    "serialsvc_grpc_requests_total",
                    "method" => self.label.clone(),
                    "code" => GRPC_CODES[code]
                )
            })
            .increment(1);
        self.duration
            .get_or_init(|| {
                metrics::histogram!(
                    "serialsvc_grpc_request_duration_seconds",
                    "method" => self.label.clone()
                )
            })
            .record(started.elapsed().as_secs_f64());
    }
}

/// Every gRPC method served, by request path, plus the "other" slot last.
#[derive(Debug)]
pub(crate) struct MethodTable {
    by_path: HashMap<String, usize>,
    methods: Vec<MethodHandles>,
}

impl MethodTable {
    fn from_descriptor_sets(sets: &[&[u8]]) -> Self {
        let mut by_path = HashMap::new();
        let mut methods = Vec::new();
        for set in sets {
            // The sets are compiled in; one that does not decode contributes
            // no names and its calls count as "other".
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = service.name.unwrap_or_default();
                    for method in service.method {
                        let method_name = method.name.unwrap_or_default();
                        let path = if package.is_empty() {
                            format!("/{service_name}/{method_name}")
                        } else {
                            format!("/{package}.{service_name}/{method_name}")
                        };
                        if by_path.contains_key(&path) {
                            continue;
                        }
                        by_path.insert(path, methods.len());
                        methods.push(MethodHandles::new(format!("{service_name}/{method_name}")));
                    }
                }
            }
        }
        methods.push(MethodHandles::new(OTHER_METHOD.to_owned()));
        MethodTable { by_path, methods }
    }

    fn slot(&self, path: &str) -> usize {
        self.by_path
            .get(path)
            .copied()
            .unwrap_or(self.methods.len() - 1)
    }

    /// The method labels, "other" last.
    #[cfg(test)]
    fn labels(&self) -> impl Iterator<Item = &str> {
        self.methods.iter().map(|m| m.label.as_str())
    }
}

/// The served gRPC methods (serial.v1, health, reflection).
pub(crate) fn grpc_methods() -> &'static Arc<MethodTable> {
    static TABLE: OnceLock<Arc<MethodTable>> = OnceLock::new();
    TABLE.get_or_init(|| {
        Arc::new(MethodTable::from_descriptor_sets(&[
            proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ]))
    })
}

/// The tower layer counting and timing every gRPC call.
#[derive(Clone, Debug)]
pub(crate) struct GrpcMetricsLayer {
    table: Arc<MethodTable>,
}

impl GrpcMetricsLayer {
    pub(crate) fn new() -> Self {
        GrpcMetricsLayer {
            table: Arc::clone(grpc_methods()),
        }
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            table: Arc::clone(&self.table),
        }
    }
}

/// The service made by [`GrpcMetricsLayer`].
#[derive(Clone, Debug)]
pub(crate) struct GrpcMetrics<S> {
    inner: S,
    table: Arc<MethodTable>,
}

impl<S, RequestBody, ResponseBody> tower_service::Service<http::Request<RequestBody>>
    for GrpcMetrics<S>
where
    S: tower_service::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
{
    type Response = http::Response<MeteredBody<ResponseBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let recorder = Recorder {
            table: Arc::clone(&self.table),
            slot: self.table.slot(request.uri().path()),
            started: Instant::now(),
            done: false,
            _call: crate::drain::Call::begin(),
        };
        MeteredFuture {
            inner: self.inner.call(request),
            recorder: Some(recorder),
        }
    }
}

/// Records one call's status and duration exactly once; dropped unfinished it
/// records `CANCELLED`.
#[derive(Debug)]
struct Recorder {
    table: Arc<MethodTable>,
    slot: usize,
    started: Instant,
    done: bool,
    /// Counts the call as in flight until its status is known.
    _call: crate::drain::Call,
}

impl Recorder {
    fn finish(mut self, code: usize) {
        self.done = true;
        self.table.methods[self.slot].finish(code, self.started);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.done {
            self.table.methods[self.slot].finish(CODE_CANCELLED, self.started);
        }
    }
}

/// The `grpc-status` of a header or trailer block, if it has one.
fn grpc_status(headers: &http::HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<usize>().ok())
            .filter(|code| *code < GRPC_CODES.len())
            .unwrap_or(CODE_UNKNOWN),
    )
}

pin_project_lite::pin_project! {
    /// The response future of [`GrpcMetrics`].
    #[derive(Debug)]
    pub(crate) struct MeteredFuture<F> {
        #[pin]
        inner: F,
        recorder: Option<Recorder>,
    }
}

impl<F, ResponseBody, Error> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<ResponseBody>, Error>>,
{
    type Output = Result<http::Response<MeteredBody<ResponseBody>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let recorder = this.recorder.take();
        Poll::Ready(match result {
            Ok(response) => {
                // A trailers-only answer carries the status in its headers.
                let recorder = match (recorder, grpc_status(response.headers())) {
                    (Some(recorder), Some(code)) => {
                        recorder.finish(code);
                        None
                    }
                    (recorder, _) => recorder,
                };
                Ok(response.map(|inner| MeteredBody { inner, recorder }))
            }
            Err(error) => {
                if let Some(recorder) = recorder {
                    recorder.finish(CODE_UNKNOWN);
                }
                Err(error)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call when its trailers pass.
    #[derive(Debug)]
    pub(crate) struct MeteredBody<B> {
        #[pin]
        inner: B,
        recorder: Option<Recorder>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| grpc_status(trailers).unwrap_or(CODE_UNKNOWN)),
            Some(Err(_)) => Some(CODE_UNKNOWN),
            // Ended without trailers: not a well-formed gRPC answer.
            None => Some(CODE_UNKNOWN),
        };
        if let Some(code) = code
            && let Some(recorder) = this.recorder.take()
        {
            recorder.finish(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Handles of one HTTP route.
#[derive(Debug)]
struct RouteHandles {
    duration: Histogram,
    by_status: RwLock<HashMap<u16, Counter>>,
}

fn route_handles(route: &str) -> Arc<RouteHandles> {
    static ROUTES: OnceLock<RwLock<HashMap<String, Arc<RouteHandles>>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| RwLock::new(HashMap::new()));
    if let Some(found) = routes
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(route)
    {
        return Arc::clone(found);
    }
    let mut routes = routes
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(routes.entry(route.to_owned()).or_insert_with(|| {
        Arc::new(RouteHandles {
            duration: metrics::histogram!(
                "serialsvc_http_request_duration_seconds",
                "route" => route.to_owned()
            ),
            by_status: RwLock::new(HashMap::new()),
        })
    }))
}

impl RouteHandles {
    fn count(&self, route: &str, status: u16) {
        if let Some(counter) = self
            .by_status
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&status)
        {
            counter.increment(1);
            return;
        }
        self.by_status
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(status)
            .or_insert_with(|| {
                metrics::counter!(
                    "serialsvc_http_requests_total",
                    "route" => route.to_owned(),
                    "status" => status.to_string()
                )
            })
            .increment(1);
    }
}

/// axum middleware (as a `route_layer`, so the matched route is known):
/// counts and times every request by route pattern and status code.
pub(crate) async fn http_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let _call = crate::drain::Call::begin();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let handles = route_handles(route);
    handles.duration.record(started.elapsed().as_secs_f64());
    handles.count(route, response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_has_a_label() {
        let table = grpc_methods();
        let labels: Vec<&str> = table.labels().collect();
        for expected in [
            "VerificationService/Verify",
            "PoolService/RequestPool",
            "StatusService/Decommission",
            "Health/Check",
            "ServerReflection/ServerReflectionInfo",
        ] {
            assert!(
                labels.contains(&expected),
                "{expected} missing from {labels:?}"
            );
        }
        assert_eq!(labels.last(), Some(&OTHER_METHOD));
        assert_eq!(
            table.slot("/serial.v1.VerificationService/Verify"),
            labels
                .iter()
                .position(|l| *l == "VerificationService/Verify")
                .expect("verify")
        );
        assert_eq!(table.slot("/no.Such/Method"), labels.len() - 1);
        assert_eq!(
            table.slot("/grpc.health.v1.Health/Check"),
            table.slot("/grpc.health.v1.Health/Check")
        );
    }

    #[test]
    fn status_is_read_from_headers() {
        let check = |value: Option<&str>, expected: Option<usize>| {
            let mut headers = http::HeaderMap::new();
            if let Some(value) = value {
                headers.insert("grpc-status", value.parse().expect("header value"));
            }
            assert_eq!(grpc_status(&headers), expected, "{value:?}");
        };
        check(None, None);
        check(Some("0"), Some(0));
        check(Some("3"), Some(3));
        check(Some("16"), Some(16));
        check(Some("17"), Some(CODE_UNKNOWN));
        check(Some("x"), Some(CODE_UNKNOWN));
    }
}
