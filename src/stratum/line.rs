//! A line reader that holds no buffer while the connection is idle.
//!
//! tokio-util's `FramedRead` keeps an 8 KiB buffer per connection; at 100,000 idle miners that
//! alone is 800 MiB. Here each read goes into a stack buffer, complete lines are handed out,
//! and only a partial line is kept (in a `Vec` freed as soon as the line completes).
//!
//! With a line timeout, a line that was started must be finished within it (slowloris: a
//! client that trickles a request a byte at a time, or never sends its newline).

use std::collections::VecDeque;
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, ReadBuf};

/// Why the reader stopped.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// A line grew past the cap without a newline (the old pool's "flooding").
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    /// A line was started and not finished within the line timeout (slowloris).
    #[error("line not finished within {0:?}")]
    Timeout(Duration),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Newline-delimited lines from `R`, each at most `max` bytes.
pub struct LineReader<R> {
    inner: R,
    partial: Vec<u8>,
    ready: VecDeque<Vec<u8>>,
    max: usize,
    done: bool,
    /// Reported once the lines completed before it were handed out.
    error: Option<LineError>,
    line_timeout: Option<Duration>,
    /// Armed while a partial line is held; boxed only then (idle connections hold none).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<R> LineReader<R> {
    /// Wraps `inner`; lines longer than `max` bytes end the stream with [`LineError::TooLong`].
    pub fn new(inner: R, max: usize) -> LineReader<R> {
        LineReader {
            inner,
            partial: Vec::new(),
            ready: VecDeque::new(),
            max,
            done: false,
            error: None,
            line_timeout: None,
            deadline: None,
        }
    }

    /// Ends the stream with [`LineError::Timeout`] when a line is not finished within `limit`
    /// of its first byte.
    pub fn with_line_timeout(mut self, limit: Duration) -> LineReader<R> {
        self.line_timeout = Some(limit);
        self
    }

    /// Splits `data` into lines; returns true if at least one line was completed.
    fn take_lines(&mut self, mut data: &[u8]) -> Result<bool, LineError> {
        let mut completed = false;
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            completed = true;
            let (head, rest) = data.split_at(pos);
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(head);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > self.max {
                return Err(LineError::TooLong(self.max));
            }
            if !line.is_empty() {
                self.ready.push_back(line);
            }
            data = &rest[1..];
        }
        if self.partial.len() + data.len() > self.max {
            return Err(LineError::TooLong(self.max));
        }
        self.partial.extend_from_slice(data);
        Ok(completed)
    }
}

impl<R: AsyncRead + Unpin> Stream for LineReader<R> {
    type Item = Result<Vec<u8>, LineError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(line) = this.ready.pop_front() {
                if this.ready.is_empty() {
                    this.ready = VecDeque::new();
                }
                return Poll::Ready(Some(Ok(line)));
            }
            if this.done {
                return Poll::Ready(this.error.take().map(Err));
            }
            // Not zeroed: this runs on every wake of the session (a job push too), and the
            // socket fills only what it reads.
            let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
            let mut read = ReadBuf::uninit(&mut buf);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => {
                    if let Some(deadline) = this.deadline.as_mut() {
                        if deadline.as_mut().poll(cx).is_ready() {
                            this.done = true;
                            this.error = this.line_timeout.map(LineError::Timeout);
                            this.partial = Vec::new();
                            this.deadline = None;
                            continue;
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    this.error = Some(e.into());
                }
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    this.done = true;
                }
                Poll::Ready(Ok(())) => {
                    let completed = match this.take_lines(read.filled()) {
                        Ok(completed) => completed,
                        Err(e) => {
                            // Hand out the complete lines before it first.
                            this.done = true;
                            this.error = Some(e);
                            this.partial = Vec::new();
                            continue;
                        }
                    };
                    if this.partial.is_empty() && this.partial.capacity() > 0 {
                        this.partial = Vec::new();
                    }
                    // The clock runs from the first byte of the unfinished line.
                    if this.partial.is_empty() || completed {
                        this.deadline = None;
                    }
                    if let (Some(limit), None, false) = (this.line_timeout, &this.deadline, this.partial.is_empty()) {
                        this.deadline = Some(Box::pin(tokio::time::sleep(limit)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn lines(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, String>> {
        let reader = LineReader::new(input, max);
        reader.map(|r| r.map_err(|e| e.to_string())).collect().await
    }

    #[tokio::test]
    async fn splits_lines_and_drops_blank_ones() {
        let got = lines(b"a\r\n\nbc\nd", 100).await;
        assert_eq!(got, vec![Ok(b"a".to_vec()), Ok(b"bc".to_vec())]);
    }

    #[tokio::test]
    async fn over_long_line_ends_the_stream() {
        let mut input = vec![b'x'; 50];
        input.push(b'\n');
        input.extend_from_slice(&[b'y'; 200]);
        let got = lines(&input, 100).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap().len(), 50);
        assert_eq!(got[1], Err("line longer than 100 bytes".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfinished_line_times_out_and_finished_lines_reset_the_clock() {
        use tokio::io::AsyncWriteExt;
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = LineReader::new(rx, 1024).with_line_timeout(Duration::from_secs(10));
        // Idle with nothing started: no timeout, however long (the login timeout covers it).
        tokio::time::advance(Duration::from_secs(60)).await;
        tx.write_all(b"{\"id\":1}\n{\"id\"").await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap(), b"{\"id\":1}");
        // 9 s later the line is finished: fine, and the next partial line gets its own 10 s.
        tokio::time::advance(Duration::from_secs(9)).await;
        tx.write_all(b":2}\n{").await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap(), b"{\"id\":2}");
        tokio::time::advance(Duration::from_secs(9)).await;
        tx.write_all(b"\"id").await.unwrap();
        // Trickling bytes does not extend the deadline: 10 s after `{` the stream ends.
        let ended = reader.next().await.unwrap();
        assert!(matches!(ended, Err(LineError::Timeout(d)) if d == Duration::from_secs(10)), "{ended:?}");
        assert!(reader.next().await.is_none());
        drop(tx);
    }

    #[tokio::test]
    async fn long_line_across_reads() {
        let (mut tx, rx) = tokio::io::duplex(16);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&[b'z'; 5000]).await.unwrap();
            tx.write_all(b"\nok\n").await.unwrap();
        });
        let got: Vec<_> = LineReader::new(rx, 10_240).collect().await;
        writer.await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap().len(), 5000);
        assert_eq!(got[1].as_ref().unwrap(), b"ok");
    }
}
