//! `balancer-ctl '<haproxy runtime command>[;<command>...]'`: the one way into
//! the balancer's runtime API. It runs inside the balancer container (through
//! `docker exec`), so whoever can reach the Docker API (local socket, SSH,
//! TLS) can steer HAProxy without the stats socket ever leaving the container.
//!
//! It writes the command line and a newline to the unix socket, half-closes,
//! and copies HAProxy's whole answer to stdout. It does not judge the answer:
//! HAProxy reports a failed command as text, which the caller parses.
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    process::ExitCode,
    time::Duration,
};

/// Where the balancer's config puts the admin socket (`stats socket` line).
const DEFAULT_SOCKET: &str = "/run/haproxy/admin.sock";
/// A stuck HAProxy must not hang the deploy that execs us.
const TIMEOUT: Duration = Duration::from_secs(10);

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
             default socket: {DEFAULT_SOCKET}"
        );
        return ExitCode::from(2);
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
    fn a_missing_socket_is_a_clear_error() {
        let error = run("/nonexistent/admin.sock", "show info").unwrap_err();
        assert!(
            error.starts_with("cannot connect to the HAProxy stats socket /nonexistent/admin.sock"),
            "{error}"
        );
    }
}
