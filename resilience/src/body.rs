//! Bounded buffering of unary bodies, so a request can be re-sent and a response classified by
//! its trailers before anyone reads it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;

/// What [`Collect`] produced.
pub(crate) enum Collected {
    /// The whole body fit under the limit.
    Complete {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// The limit was exceeded: the frames read so far, then the rest of the original body.
    TooLarge(Body),
}

/// Reads a body to its end unless it grows past `limit` bytes.
pub(crate) struct Collect {
    body: Option<Body>,
    chunks: Vec<Bytes>,
    len: usize,
    limit: usize,
}

impl Collect {
    pub(crate) fn new(body: Body, limit: usize) -> Self {
        Self {
            body: Some(body),
            chunks: Vec::new(),
            len: 0,
            limit,
        }
    }
}

impl Future for Collect {
    type Output = Result<Collected, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let body = this.body.as_mut().expect("Collect polled after completion");
        loop {
            let frame = match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                None => {
                    this.body = None;
                    return Poll::Ready(Ok(Collected::Complete {
                        data: concat(std::mem::take(&mut this.chunks), this.len),
                        trailers: None,
                    }));
                }
                Some(Err(status)) => {
                    this.body = None;
                    return Poll::Ready(Err(status));
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => {
                    if this.chunks.is_empty() {
                        // Unary bodies are one message: size the buffer for it, no more.
                        this.chunks.reserve_exact(1);
                    }
                    this.len += data.len();
                    this.chunks.push(data);
                    if this.len > this.limit {
                        let rest = this.body.take().expect("body present while collecting");
                        let prefix = std::mem::take(&mut this.chunks)
                            .into_iter()
                            .map(Frame::data)
                            .collect();
                        return Poll::Ready(Ok(Collected::TooLarge(Body::new(Prefixed {
                            prefix,
                            rest,
                        }))));
                    }
                }
                Err(frame) => {
                    // gRPC trailers end the stream; anything after them is ignored.
                    let trailers = frame.into_trailers().ok();
                    this.body = None;
                    return Poll::Ready(Ok(Collected::Complete {
                        data: concat(std::mem::take(&mut this.chunks), this.len),
                        trailers,
                    }));
                }
            }
        }
    }
}

fn concat(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            let mut buf = BytesMut::with_capacity(len);
            for chunk in chunks {
                buf.extend_from_slice(chunk.chunk());
            }
            buf.freeze()
        }
    }
}

/// A fully buffered body: one data frame, then optional trailers.
#[derive(Debug, Default)]
pub(crate) struct Buffered {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Buffered {
    pub(crate) fn new(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            data: (!data.is_empty()).then_some(data),
            trailers,
        }
    }
}

impl HttpBody for Buffered {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// Frames already read, followed by the unread rest of the body.
struct Prefixed {
    prefix: VecDeque<Frame<Bytes>>,
    rest: Body,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(frame) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn chunked(chunks: &[&'static [u8]], trailers: Option<HeaderMap>) -> Body {
        let mut frames: Vec<Result<Frame<Bytes>, Status>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        if let Some(t) = trailers {
            frames.push(Ok(Frame::trailers(t)));
        }
        Body::new(http_body_util::StreamBody::new(futures_stream(frames)))
    }

    fn futures_stream(
        frames: Vec<Result<Frame<Bytes>, Status>>,
    ) -> impl tokio_stream::Stream<Item = Result<Frame<Bytes>, Status>> + Send {
        tokio_stream::iter(frames)
    }

    #[tokio::test]
    async fn collects_small_bodies_with_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let body = chunked(&[b"ab", b"cd"], Some(trailers.clone()));
        let Ok(Collected::Complete { data, trailers: t }) = Collect::new(body, 4).await else {
            panic!("expected complete");
        };
        assert_eq!(&data[..], b"abcd");
        assert_eq!(t, Some(trailers));
    }

    #[tokio::test]
    async fn too_large_bodies_are_passed_on_whole() {
        let body = chunked(&[b"ab", b"cd", b"ef"], None);
        let Ok(Collected::TooLarge(rest)) = Collect::new(body, 3).await else {
            panic!("expected too large");
        };
        let all = rest.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcdef");
    }

    #[tokio::test]
    async fn buffered_replays_data_then_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let collected = Buffered::new(Bytes::from_static(b"xy"), Some(trailers.clone()))
            .collect()
            .await
            .unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(&collected.to_bytes()[..], b"xy");
    }
}
