//! Tests of request bodies and replays.

use super::*;
use http_body::Frame;
use http_body_util::BodyExt;

#[tokio::test]
async fn buffered_bodies_replay() {
    let body: ReplayBody<Empty<Bytes>> = ReplayBody::from_bytes("abc");
    let copy = body.try_clone_body().unwrap();
    assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
    assert_eq!(copy.collect().await.unwrap().to_bytes(), "abc");
}

#[tokio::test]
async fn a_stream_replays_only_until_it_starts() {
    let body = ReplayBody::streaming(Full::new(Bytes::from_static(b"stream")));
    let spare = body.try_clone_body().expect("not started yet");
    // The first attempt starts the stream: no further copies, and the
    // spare made before the start knows it.
    assert!(spare.is_replayable());
    let mut first = body;
    let frame = first.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "stream");
    assert!(first.try_clone_body().is_none());
    assert!(spare.try_clone_body().is_none());
    assert!(!spare.is_replayable());
    // The spare made before the start cannot send it a second time.
    let err = spare.collect().await.unwrap_err();
    assert!(err.to_string().contains("already sent"));
}

#[tokio::test]
async fn boxed_bodies_copy_only_when_empty() {
    let empty: BoxBody<Bytes, BoxError> = Empty::new().map_err(|n| match n {}).boxed();
    let copy = empty
        .try_clone_body()
        .expect("an empty boxed body is copied");
    assert!(copy.is_end_stream());
    let full: UnsyncBoxBody<Bytes, BoxError> = Full::new(Bytes::from_static(b"x"))
        .map_err(|n| match n {})
        .boxed_unsync();
    assert!(full.try_clone_body().is_none());
}

/// A body yielding empty data frames forever (always ready): `buffer`
/// looped without end and without yielding before the bound on them.
#[tokio::test]
async fn buffer_ends_a_body_of_endless_empty_frames() {
    let endless = http_body_util::StreamBody::new(endless_empty_frames());
    let err = ReplayBody::<Empty<Bytes>>::buffer(endless, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BufferError::TooManyFrames { max_frames: 1024 }),
        "{err}"
    );
    let endless = http_body_util::StreamBody::new(endless_empty_frames());
    let err = ReplayBody::<Empty<Bytes>>::buffer(endless, 5000)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BufferError::TooManyFrames { max_frames: 5000 }),
        "{err}"
    );
    // Up to the bound, empty frames are fine.
    let some = http_body_util::StreamBody::new(tokio_stream::iter(
        (0..1024).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::new()))),
    ));
    let body: ReplayBody<Empty<Bytes>> = ReplayBody::buffer(some, 0).await.unwrap();
    assert_eq!(body.collect().await.unwrap().to_bytes(), "");
}

/// An endless, always-ready stream of empty data frames.
fn endless_empty_frames() -> impl tokio_stream::Stream<Item = Result<Frame<Bytes>, BoxError>> {
    tokio_stream::iter(std::iter::repeat_with(|| Ok(Frame::data(Bytes::new()))))
}

#[tokio::test]
async fn buffer_reads_up_to_the_bound() {
    let boxed: BoxBody<Bytes, BoxError> = Full::new(Bytes::from_static(b"order #42"))
        .map_err(|n| match n {})
        .boxed();
    let body: ReplayBody<Empty<Bytes>> = ReplayBody::buffer(boxed, 9).await.unwrap();
    let copy = body.try_clone_body().unwrap();
    assert_eq!(copy.collect().await.unwrap().to_bytes(), "order #42");
    let long = Full::new(Bytes::from_static(b"order #42"));
    let err = ReplayBody::<Empty<Bytes>>::buffer(long, 8)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BufferError::TooLong { max_bytes: 8 }),
        "{err}"
    );
}

#[tokio::test]
async fn an_unstarted_stream_moves_to_the_retry() {
    let body = ReplayBody::streaming(Full::new(Bytes::from_static(b"once")));
    let retry = body.try_clone_body().unwrap();
    drop(body); // the first attempt failed to connect and was dropped
    assert_eq!(retry.collect().await.unwrap().to_bytes(), "once");
}

/// A body past the bound of `buffer_or_stream` is kept whole, as a stream
/// (the bytes read, then the rest), replayable only until it starts; one
/// within it is buffered. `buffer` drops such a body (`TooLong`).
#[tokio::test]
async fn a_body_past_the_bound_is_streamed_whole() {
    let chunks = || {
        http_body_util::StreamBody::new(tokio_stream::iter(
            ["ab", "cd", "ef"]
                .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c.as_bytes())))),
        ))
    };
    let fits = ReplayBody::buffer_or_stream(chunks(), 6).await.unwrap();
    assert!(fits.is_buffered());
    assert_eq!(
        fits.try_clone_body()
            .unwrap()
            .collect()
            .await
            .unwrap()
            .to_bytes(),
        "abcdef"
    );
    for bound in [0, 1, 3, 5] {
        let long = ReplayBody::buffer_or_stream(chunks(), bound).await.unwrap();
        assert!(!long.is_buffered(), "{bound}");
        let spare = long.try_clone_body().expect("not started yet");
        assert_eq!(
            long.collect().await.unwrap().to_bytes(),
            "abcdef",
            "{bound}"
        );
        assert!(!spare.is_replayable());
    }
    // Unstarted, it moves whole to a retry.
    let long = ReplayBody::buffer_or_stream(chunks(), 3).await.unwrap();
    let retry = long.try_clone_body().unwrap();
    drop(long);
    let hint = retry.size_hint();
    assert_eq!(retry.collect().await.unwrap().to_bytes(), "abcdef");
    assert_eq!(hint.lower(), 0);
    // By its size hint: streamed without a read.
    let known = ReplayBody::buffer_or_stream(Full::new(Bytes::from_static(b"abcdef")), 5)
        .await
        .unwrap();
    assert!(!known.is_buffered());
    assert_eq!(known.collect().await.unwrap().to_bytes(), "abcdef");
    // Endless empty frames: streamed past the bound on them, not an error.
    let endless = http_body_util::StreamBody::new(endless_empty_frames());
    let body = ReplayBody::buffer_or_stream(endless, 10).await.unwrap();
    assert!(!body.is_buffered());
}

/// A stream an attempt read to its end is copied for a retry after that
/// attempt never reached a server (`try_clone_unsent`), with the bytes it
/// read; not by `try_clone_body` (a server may have it). Read in part,
/// past `UNSENT_REPLAY_MAX`, or with trailers: no copy.
#[tokio::test]
async fn a_stream_read_whole_is_copied_only_for_an_unsent_retry() {
    let chunks =
        |n: usize, size: usize| {
            http_body_util::StreamBody::new(tokio_stream::iter((0..n).map(move |i| {
                Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'a' + i as u8; size])))
            })))
        };
    let body = ReplayBody::streaming(chunks(3, 2));
    let spare = body.try_clone_body().expect("not started");
    assert!(spare.try_clone_unsent().is_some());
    let mut first = body;
    let _ = first.frame().await.unwrap().unwrap();
    // Read in part: nothing to send again.
    assert!(!spare.is_replayable_unsent());
    assert!(spare.try_clone_unsent().is_none());
    assert_eq!(first.collect().await.unwrap().to_bytes(), "bbcc");
    assert!(spare.is_replayable_unsent());
    assert!(!spare.is_replayable());
    assert!(spare.try_clone_body().is_none());
    let copy = spare.try_clone_unsent().expect("read whole");
    assert_eq!(copy.collect().await.unwrap().to_bytes(), "aabbcc");

    // Past the bound: sent once.
    let body = ReplayBody::streaming(chunks(2, UNSENT_REPLAY_MAX / 2 + 1));
    let spare = body.try_clone_body().expect("not started");
    let _ = body.collect().await.unwrap();
    assert!(spare.try_clone_unsent().is_none());

    // Trailers: sent once.
    let with_trailers = http_body_util::StreamBody::new(tokio_stream::iter([
        Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"x"))),
        Ok(Frame::trailers(http::HeaderMap::new())),
    ]));
    let body = ReplayBody::streaming(with_trailers);
    let spare = body.try_clone_body().expect("not started");
    let _ = body.collect().await.unwrap();
    assert!(spare.try_clone_unsent().is_none());
}
