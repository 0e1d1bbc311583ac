//! `balancer-ctl '<haproxy runtime command>[;<command>...]'`: the one way into
//! the balancer's runtime API. It runs inside the balancer container (through
//! `docker exec`), so whoever can reach the Docker API (local socket, SSH,
//! TLS) can steer HAProxy without the stats socket ever leaving the container.
//!
//! It writes the command line and a newline to the unix socket, half-closes,
//! and copies HAProxy's whole answer to stdout. It does not judge the answer:
//! HAProxy reports a failed command as text, which the caller parses.
//!
//! `balancer-ctl --session` serves many command lines over one `docker
//! exec` (an exec costs ~90 ms; a line on an open session, a few): it
//! prints the banner line `balancer-ctl session 1`, then reads command
//! lines from stdin and answers each as a frame, `ok <len>\n` or
//! `err <len>\n` followed by exactly `<len>` bytes (HAProxy's answer, or
//! why it could not be had), until stdin ends.
use std::{
    io::{BufRead, Read, Write},
    os::unix::net::UnixStream,
    process::ExitCode,
    time::Duration,
};

/// Where the balancer's config puts the admin socket (`stats socket` line).
const DEFAULT_SOCKET: &str = "/run/haproxy/admin.sock";
/// A stuck HAProxy must not hang the deploy that execs us.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The first line of a session: what the caller checks before it sends
/// anything (an older balancer-ctl would take `--session` for a command).
const BANNER: &str = "balancer-ctl session 1\n";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut socket = DEFAULT_SOCKET.to_owned();
    if args.first().map(String::as_str) == Some("--socket") && args.len() >= 2 {
        socket = args.remove(1);
        args.remove(0);
    }
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        eprintln!(
            "usage: balancer-ctl [--socket PATH] '<haproxy runtime command>[;<command>...]'\n\
             \x20      balancer-ctl [--socket PATH] --session   (command lines on stdin)\n\
             default socket: {DEFAULT_SOCKET}"
        );
        return ExitCode::from(2);
    }
    if args == ["--session"] {
        let stdin = std::io::stdin().lock();
        return match session(&socket, stdin, std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("balancer-ctl: session: {e}");
                ExitCode::from(1)
            }
        };
    }
    // Several arguments are one command line, as a shell would join them.
    let line = args.join(" ");
    if line.contains('\n') {
        eprintln!("balancer-ctl: the command contains a newline; use `;` between commands");
        return ExitCode::from(2);
    }
    match run(&socket, &line) {
        Ok(answer) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&answer).and_then(|()| out.flush()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("balancer-ctl: {message}");
            ExitCode::from(1)
        }
    }
}

/// One frame: `ok <len>` or `err <len>`, a newline, the bytes.
fn frame(ok: bool, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{} {}\n", if ok { "ok" } else { "err" }, body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// The banner, then one frame per line read, each flushed at once; ends
/// with the input. An empty line or one with a newline's worth of nothing
/// is answered with an error frame, never sent to HAProxy.
fn session(socket: &str, input: impl BufRead, mut output: impl Write) -> std::io::Result<()> {
    output.write_all(BANNER.as_bytes())?;
    output.flush()?;
    for line in input.lines() {
        let line = line?;
        let line = line.trim_end_matches('\r');
        let answer = if line.trim().is_empty() {
            frame(false, b"empty command line")
        } else {
            match run(socket, line) {
                Ok(answer) => frame(true, &answer),
                Err(message) => frame(false, message.as_bytes()),
            }
        };
        output.write_all(&answer)?;
        output.flush()?;
    }
    Ok(())
}

fn run(socket: &str, line: &str) -> Result<Vec<u8>, String> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to the HAProxy stats socket {socket}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| format!("setting socket timeouts: {e}"))?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("writing to {socket}: {e}"))?;
    // Non-interactive mode: HAProxy answers every command, then closes.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading HAProxy's answer from {socket}: {e}"))?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use std::{io::BufRead, os::unix::net::UnixListener};

    use super::*;

    #[test]
    fn sends_the_line_and_returns_the_whole_answer() {
        let path = std::env::temp_dir().join(format!("balancer-ctl-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        // Plays HAProxy: reads one line, answers, closes.
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            std::io::BufReader::new(&stream)
                .read_line(&mut line)
                .unwrap();
            stream.write_all(b"\nNo such server.\n\n").unwrap();
            line
        });
        let answer = run(
            path.to_str().unwrap(),
            "set weight app/s1 0;set weight app/s9 1",
        )
        .unwrap();
        assert_eq!(
            server.join().unwrap(),
            "set weight app/s1 0;set weight app/s9 1\n"
        );
        assert_eq!(answer, b"\nNo such server.\n\n");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_session_answers_every_line_as_a_frame_until_its_input_ends() {
        let path =
            std::env::temp_dir().join(format!("balancer-ctl-session-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        // Plays HAProxy for two connections: echoes the line it got.
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                let mut line = String::new();
                std::io::BufReader::new(&stream)
                    .read_line(&mut line)
                    .unwrap();
                stream
                    .write_all(format!("got {}\n", line.trim()).as_bytes())
                    .unwrap();
            }
        });
        let input = b"show info\n\nset weight app/s1 0;show stat\n";
        let mut output = Vec::new();
        session(path.to_str().unwrap(), &input[..], &mut output).unwrap();
        server.join().unwrap();
        assert_eq!(
            String::from_utf8(output).unwrap(),
            "balancer-ctl session 1\n\
             ok 14\ngot show info\n\
             err 18\nempty command line\
             ok 34\ngot set weight app/s1 0;show stat\n"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_session_reports_an_unreachable_socket_per_line_and_goes_on() {
        let mut output = Vec::new();
        session("/nonexistent/admin.sock", &b"show info\n"[..], &mut output).unwrap();
        let text = String::from_utf8(output).unwrap();
        let rest = text.strip_prefix(BANNER).unwrap();
        let (header, body) = rest.split_once('\n').unwrap();
        assert_eq!(header, format!("err {}", body.len()));
        assert!(body.starts_with("cannot connect"), "{body}");
    }

    #[test]
    fn a_missing_socket_is_a_clear_error() {
        let error = run("/nonexistent/admin.sock", "show info").unwrap_err();
        assert!(
            error.starts_with("cannot connect to the HAProxy stats socket /nonexistent/admin.sock"),
            "{error}"
        );
    }
}
