//! One runtime-API session per balancer handle: a single attached `docker
//! exec balancer-ctl --session` whose stdin takes command lines and whose
//! stdout answers each with a frame (see balancer-ctl's docs). A one-shot
//! exec costs ~90 ms; a line on an open session costs a few, so a gate that
//! reads `show stat` every look and a deploy step that sends several
//! batches pay the exec once.
//!
//! The session is an optimisation only: when it cannot be opened (an older
//! balancer image whose balancer-ctl has no `--session`) or dies (the
//! container restarted, the connection dropped), the caller falls back to
//! one exec per line. Every command the targets send is idempotent (set an
//! address, a weight, a state; show), so a line whose answer was lost may
//! be sent again by the fallback.
use std::{pin::Pin, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use bollard::{container::LogOutput, exec::StartExecResults, Docker};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::image::CTL_IN_IMAGE;

/// What `balancer-ctl --session` prints first.
pub const BANNER: &str = "balancer-ctl session 1";
/// A stuck HAProxy or engine must not hang a deploy; balancer-ctl gives up
/// on the socket after 10 s itself.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// One answer of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// HAProxy's answer, as it wrote it.
    Ok(String),
    /// balancer-ctl could not get one (the socket did not answer...).
    Err(String),
}

/// The first frame in `buf` and the bytes it took, or `None` while it is
/// incomplete. A header that is not `ok <len>` / `err <len>` is an error:
/// the stream is out of step and the session must close.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>> {
    let Some(end) = buf.iter().position(|b| *b == b'\n') else {
        if buf.len() > 64 {
            bail!(
                "balancer-ctl session: no frame header in {:?}",
                String::from_utf8_lossy(&buf[..64])
            );
        }
        return Ok(None);
    };
    let header = std::str::from_utf8(&buf[..end]).context("balancer-ctl session: frame header")?;
    let (kind, len) = header
        .split_once(' ')
        .and_then(|(k, l)| Some((k, l.parse::<usize>().ok()?)))
        .with_context(|| format!("balancer-ctl session: bad frame header {header:?}"))?;
    let start = end + 1;
    if buf.len() < start + len {
        return Ok(None);
    }
    let body = String::from_utf8_lossy(&buf[start..start + len]).into_owned();
    let frame = match kind {
        "ok" => Frame::Ok(body),
        "err" => Frame::Err(body),
        other => bail!("balancer-ctl session: unknown frame kind {other:?}"),
    };
    Ok(Some((frame, start + len)))
}

/// Whether `buf` starts with the banner line: `Some(len)` with the bytes
/// it took, `None` while too short to say; anything else (an older
/// balancer-ctl's answer to `--session` as a command) is an error.
pub fn parse_banner(buf: &[u8]) -> Result<Option<usize>> {
    let want = format!("{BANNER}\n");
    if buf.len() < want.len() {
        if want.as_bytes().starts_with(buf) {
            return Ok(None);
        }
    } else if buf.starts_with(want.as_bytes()) {
        return Ok(Some(want.len()));
    }
    bail!(
        "balancer-ctl has no session mode (it answered {:?})",
        String::from_utf8_lossy(&buf[..buf.len().min(80)])
    )
}

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// An open session.
pub struct Session {
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: Output,
    buf: Vec<u8>,
    stderr: String,
    /// A line was sent and its answer not read yet. Still set when the next
    /// line comes, the caller of the last one was cancelled (Ctrl-C drops
    /// a deploy's future mid-command): that answer is still on its way and
    /// would be taken for the next line's, so the session must go.
    awaiting: bool,
}

impl Session {
    /// Starts `balancer-ctl --session` in `container` and reads its banner.
    pub async fn open(docker: &Docker, container: &str) -> Result<Session> {
        let (_, started) =
            super::engine::start_attached(docker, container, &[CTL_IN_IMAGE, "--session"], true)
                .await?;
        let StartExecResults::Attached { output, input } = started else {
            bail!("session exec in {container} started detached");
        };
        let mut session = Session {
            input,
            output,
            buf: Vec::new(),
            stderr: String::new(),
            awaiting: false,
        };
        tokio::time::timeout(OPEN_TIMEOUT, async {
            loop {
                if let Some(len) = parse_banner(&session.buf)? {
                    session.buf.drain(..len);
                    return Ok::<(), anyhow::Error>(());
                }
                session.read_more().await?;
            }
        })
        .await
        .with_context(|| format!("no session banner from {container} within {OPEN_TIMEOUT:?}"))??;
        Ok(session)
    }

    /// Sends one command line and waits for its frame. A transport error
    /// (the session is no longer usable) and an `err` frame (balancer-ctl
    /// is fine, HAProxy did not answer) are told apart by `Answer`.
    pub async fn request(&mut self, line: &str) -> Answer {
        if line.contains(['\n', '\r']) {
            return Answer::Refused(format!("command line {line:?} contains a newline"));
        }
        if self.awaiting {
            return Answer::Broken(anyhow::anyhow!(
                "the session is out of step: the answer to a cancelled line is still due"
            ));
        }
        let exchange = async {
            self.awaiting = true;
            self.input.write_all(format!("{line}\n").as_bytes()).await?;
            self.input.flush().await?;
            loop {
                if let Some((frame, len)) = parse_frame(&self.buf)? {
                    self.buf.drain(..len);
                    self.awaiting = false;
                    return Ok::<_, anyhow::Error>(frame);
                }
                self.read_more().await?;
            }
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
            Ok(Ok(Frame::Ok(answer))) => Answer::Ok(answer),
            Ok(Ok(Frame::Err(reason))) => Answer::Refused(reason),
            Ok(Err(e)) => Answer::Broken(e),
            Err(_) => Answer::Broken(anyhow::anyhow!(
                "no answer on the session within {ANSWER_TIMEOUT:?}"
            )),
        }
    }

    /// The next chunk of stdout into the buffer (stderr is kept for errors).
    async fn read_more(&mut self) -> Result<()> {
        loop {
            match self.output.next().await {
                Some(Ok(LogOutput::StdErr { message })) => {
                    self.stderr.push_str(&String::from_utf8_lossy(&message));
                }
                Some(Ok(other)) => {
                    self.buf.extend_from_slice(&other.into_bytes());
                    return Ok(());
                }
                Some(Err(e)) => return Err(e).context("reading the session's output"),
                None => bail!(
                    "the session ended{}",
                    if self.stderr.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", self.stderr.trim())
                    }
                ),
            }
        }
    }
}

/// How a line on the session went.
pub enum Answer {
    Ok(String),
    /// balancer-ctl answered that it could not get HAProxy's answer.
    Refused(String),
    /// The session is gone; the line may or may not have run.
    Broken(anyhow::Error),
}

/// A session shared by the clones of one balancer handle, opened at the
/// first line. `Unsupported` is remembered: an image without the session
/// mode is not asked again by this handle.
#[derive(Default)]
pub enum Slot {
    #[default]
    Closed,
    Open(Session),
    Unsupported,
}

pub type Shared = Arc<tokio::sync::Mutex<Slot>>;

/// Whether lines go over an open session now (cheap enough to poll with).
pub async fn is_open(shared: &Shared) -> bool {
    matches!(*shared.lock().await, Slot::Open(_))
}

/// What `exec_raw` does with a line: its answer from the session, or
/// `None` to send it by a one-shot exec (no session to be had, or it broke).
pub async fn send(
    shared: &Shared,
    docker: &Docker,
    container: &str,
    line: &str,
) -> Option<Result<String>> {
    let mut slot = shared.lock().await;
    if matches!(&*slot, Slot::Open(session) if session.awaiting) {
        // Its last caller was cancelled mid-line: a fresh session, in step.
        *slot = Slot::Closed;
    }
    if matches!(*slot, Slot::Closed) {
        *slot = match Session::open(docker, container).await {
            Ok(session) => Slot::Open(session),
            Err(e) if format!("{e:#}").contains("no session mode") => Slot::Unsupported,
            // Not running yet, or the engine hiccuped: the next line tries again.
            Err(_) => return None,
        };
    }
    let Slot::Open(session) = &mut *slot else {
        return None;
    };
    match session.request(line).await {
        Answer::Ok(answer) => Some(Ok(answer)),
        Answer::Refused(reason) => Some(Err(anyhow::anyhow!(
            "balancer-ctl in {container}: {}",
            reason.trim()
        ))),
        Answer::Broken(_) => {
            *slot = Slot::Closed;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_whole_one_at_a_time() {
        let buf = b"ok 3\nab\nerr 4\nnope";
        let (first, used) = parse_frame(buf).unwrap().unwrap();
        assert_eq!(first, Frame::Ok("ab\n".into()));
        let (second, rest) = parse_frame(&buf[used..]).unwrap().unwrap();
        assert_eq!(second, Frame::Err("nope".into()));
        assert_eq!(used + rest, buf.len());
        // An answer with blank lines inside (show stat, show info) is one frame.
        let (frame, _) = parse_frame(b"ok 6\na\n\nb\n\n").unwrap().unwrap();
        assert_eq!(frame, Frame::Ok("a\n\nb\n\n".into()));
        assert_eq!(
            parse_frame(b"ok 0\n").unwrap(),
            Some((Frame::Ok(String::new()), 5))
        );
    }

    #[test]
    fn an_incomplete_frame_waits_for_more() {
        assert_eq!(parse_frame(b"").unwrap(), None);
        assert_eq!(parse_frame(b"ok 1").unwrap(), None);
        assert_eq!(parse_frame(b"ok 10\nshort").unwrap(), None);
    }

    #[test]
    fn a_stream_out_of_step_is_an_error() {
        assert!(parse_frame(b"Unknown command\n").is_err());
        assert!(parse_frame(b"maybe 3\nabc").is_err());
        assert!(parse_frame(b"ok -1\n").is_err());
        assert!(parse_frame(&[b'x'; 100]).is_err());
    }

    /// A session over an answer stream the test feeds.
    fn fed() -> (Session, tokio::sync::mpsc::UnboundedSender<&'static str>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        let output = futures_util::stream::unfold(rx, |mut rx| async move {
            let text = rx.recv().await?;
            Some((
                Ok(LogOutput::StdOut {
                    message: text.as_bytes().to_vec().into(),
                }),
                rx,
            ))
        });
        let session = Session {
            input: Box::pin(tokio::io::sink()),
            output: Box::pin(output),
            buf: Vec::new(),
            stderr: String::new(),
            awaiting: false,
        };
        (session, tx)
    }

    #[tokio::test]
    async fn a_line_whose_caller_was_cancelled_puts_the_session_out_of_step() {
        let (mut session, tx) = fed();
        tx.send("ok 3\none").unwrap();
        assert!(matches!(session.request("show info").await, Answer::Ok(a) if a == "one"));
        // The caller gives up before the answer comes (Ctrl-C mid-command).
        let cancelled =
            tokio::time::timeout(Duration::from_millis(20), session.request("show stat")).await;
        assert!(cancelled.is_err());
        // Its answer arrives late; the next line must not take it for its own.
        tx.send("ok 5\nstats").unwrap();
        match session.request("set server app/s1 state maint").await {
            Answer::Broken(e) => assert!(format!("{e}").contains("out of step"), "{e}"),
            Answer::Ok(a) => panic!("took the cancelled line's answer: {a:?}"),
            Answer::Refused(r) => panic!("refused: {r}"),
        }
    }

    #[test]
    fn the_banner_tells_a_session_from_an_older_balancer_ctl() {
        assert_eq!(parse_banner(b"").unwrap(), None);
        assert_eq!(parse_banner(b"balancer-ctl ses").unwrap(), None);
        let with_frame = b"balancer-ctl session 1\nok 0\n";
        assert_eq!(parse_banner(with_frame).unwrap(), Some(23));
        // An older balancer-ctl sends `--session` to HAProxy as a command.
        let older = parse_banner(b"Unknown command: '--session'\n").unwrap_err();
        assert!(format!("{older}").contains("no session mode"), "{older}");
    }
}
