//! `balancer-ctl '<haproxy runtime command>[;<command>...]'`: the one way into
//! the balancer's runtime API. It runs inside the balancer container (through
//! `docker exec`), so whoever can reach the Docker API (local socket, SSH,
//! TLS) can steer HAProxy without the stats socket ever leaving the container.
//!
//! It writes the command line and a newline to the unix socket, half-closes,
//! and copies HAProxy's whole answer to stdout. It does not judge the answer:
//! HAProxy reports a failed command as text, which the caller parses.
//!
//! After a command line that changes a slot it saves HAProxy's `show
//! servers state` to the file the config loads at start (written beside it
//! and renamed, so HAProxy never reads half a file): a balancer the engine
//! restarts after a crash comes back with the same slots. A folder that
//! does not exist means no state is kept there (an older image); a failed
//! save is a warning on stderr, never a failed command.
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
/// Where the balancer's config has HAProxy load the slots' state from
/// (`server-state-file`).
const DEFAULT_STATE_FILE: &str = "/var/lib/haproxy/server-state";
/// A stuck HAProxy must not hang the deploy that execs us.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The first line of a session: what the caller checks before it sends
/// anything (an older balancer-ctl would take `--session` for a command).
const BANNER: &str = "balancer-ctl session 1\n";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut paths = Paths {
        socket: DEFAULT_SOCKET.to_owned(),
        state_file: DEFAULT_STATE_FILE.to_owned(),
    };
    while args.len() >= 2 && matches!(args[0].as_str(), "--socket" | "--state-file") {
        let value = args.remove(1);
        match args.remove(0).as_str() {
            "--socket" => paths.socket = value,
            _ => paths.state_file = value,
        }
    }
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        eprintln!(
            "usage: balancer-ctl [--socket PATH] [--state-file PATH] '<haproxy runtime command>[;<command>...]'\n\
             \x20      balancer-ctl [--socket PATH] [--state-file PATH] --session   (command lines on stdin)\n\
             defaults: socket {DEFAULT_SOCKET}, state file {DEFAULT_STATE_FILE}"
        );
        return ExitCode::from(2);
    }
    if args == ["--session"] {
        let stdin = std::io::stdin().lock();
        return match session(&paths, stdin, std::io::stdout().lock()) {
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
    match run_and_save(&paths, &line) {
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
fn session(paths: &Paths, input: impl BufRead, mut output: impl Write) -> std::io::Result<()> {
    output.write_all(BANNER.as_bytes())?;
    output.flush()?;
    for line in input.lines() {
        let line = line?;
        let line = line.trim_end_matches('\r');
        let answer = if line.trim().is_empty() {
            frame(false, b"empty command line")
        } else {
            match run_and_save(paths, line) {
                Ok(answer) => frame(true, &answer),
                Err(message) => frame(false, message.as_bytes()),
            }
        };
        output.write_all(&answer)?;
        output.flush()?;
    }
    Ok(())
}

struct Paths {
    socket: String,
    state_file: String,
}

/// Whether a command line changes a slot (its address, state or weight).
fn changes_slots(line: &str) -> bool {
    const CHANGES: &[&str] = &[
        "set server ",
        "set weight ",
        "enable server ",
        "disable server ",
        "add server ",
        "del server ",
    ];
    line.split(';')
        .map(str::trim_start)
        .any(|command| CHANGES.iter().any(|c| command.starts_with(c)))
}

/// Runs the line; if it changes a slot, saves the state afterwards.
fn run_and_save(paths: &Paths, line: &str) -> Result<Vec<u8>, String> {
    let answer = run(&paths.socket, line)?;
    if changes_slots(line) {
        if let Err(e) = save_state(paths) {
            eprintln!("balancer-ctl: warning: saving the slot state: {e}");
        }
    }
    Ok(answer)
}

/// `show servers state` into the state file, whole or not at all.
fn save_state(paths: &Paths) -> Result<(), String> {
    let file = std::path::Path::new(&paths.state_file);
    if !file.parent().is_some_and(std::path::Path::is_dir) {
        return Ok(());
    }
    let state = run(&paths.socket, "show servers state")?;
    // Format version 1 on the first line: anything else is an error text.
    if !state.starts_with(b"1\n") {
        return Err(format!(
            "HAProxy answered `show servers state` with: {}",
            String::from_utf8_lossy(&state).trim()
        ));
    }
    let partial = format!("{}.{}.partial", paths.state_file, std::process::id());
    std::fs::write(&partial, &state)
        .and_then(|()| std::fs::rename(&partial, file))
        .map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            format!("writing {}: {e}", paths.state_file)
        })
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

    fn no_state(socket: &str) -> Paths {
        Paths {
            socket: socket.into(),
            state_file: "/nonexistent/server-state".into(),
        }
    }

    #[test]
    fn only_lines_that_change_a_slot_save_the_state() {
        assert!(changes_slots("set server app/s1 addr 10.0.0.2 port 8080"));
        assert!(changes_slots("show stat; set weight app/s1 0"));
        assert!(changes_slots("disable server app/s3"));
        assert!(!changes_slots("show stat"));
        assert!(!changes_slots("show servers state"));
    }

    /// Plays HAProxy for `connections` connections: records each line it
    /// got and answers a state dump or an empty line.
    fn fake_haproxy(
        path: &std::path::Path,
        connections: usize,
    ) -> std::thread::JoinHandle<Vec<String>> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 0..connections {
                let (mut stream, _) = listener.accept().unwrap();
                let mut line = String::new();
                std::io::BufReader::new(&stream)
                    .read_line(&mut line)
                    .unwrap();
                let answer = match line.trim() {
                    "show servers state" => {
                        "1\n# be_id be_name srv_id\n3 app 1 s1 10.0.0.2 2 0 7\n\n"
                    }
                    _ => "\n",
                };
                stream.write_all(answer.as_bytes()).unwrap();
                got.push(line.trim().to_owned());
            }
            got
        })
    }

    #[test]
    fn a_slot_change_saves_haproxys_state_whole_and_a_read_does_not() {
        let dir = std::env::temp_dir().join(format!("balancer-ctl-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = Paths {
            socket: dir.join("admin.sock").to_string_lossy().into_owned(),
            state_file: dir.join("server-state").to_string_lossy().into_owned(),
        };
        let server = fake_haproxy(std::path::Path::new(&paths.socket), 3);
        run_and_save(&paths, "show stat").unwrap();
        assert!(!dir.join("server-state").exists(), "a read saves nothing");
        run_and_save(
            &paths,
            "set server app/s1 addr 10.0.0.2 port 8080;set weight app/s1 7",
        )
        .unwrap();
        assert_eq!(
            server.join().unwrap(),
            [
                "show stat",
                "set server app/s1 addr 10.0.0.2 port 8080;set weight app/s1 7",
                "show servers state"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("server-state")).unwrap(),
            "1\n# be_id be_name srv_id\n3 app 1 s1 10.0.0.2 2 0 7\n\n"
        );
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "no partial file left: {left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

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
        session(&no_state(path.to_str().unwrap()), &input[..], &mut output).unwrap();
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
        session(
            &no_state("/nonexistent/admin.sock"),
            &b"show info\n"[..],
            &mut output,
        )
        .unwrap();
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
