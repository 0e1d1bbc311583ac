//! moto's S3 server (PyPI, pinned in xtask/python/s3-server.txt) on a
//! loopback port, with IAM authentication on: every S3 request after the set
//! up must carry a valid SigV4 signature from an access key moto's IAM made,
//! or moto answers 403 SignatureDoesNotMatch as S3 does. The set up (a user,
//! its key, a policy, the bucket) uses moto's allowance of a few unsigned
//! first requests.
use std::{
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use xtask::s3::sigv4::uri_encode;

/// The unsigned requests `start` makes before authentication is enforced.
const SETUP_REQUESTS: usize = 4;

pub struct Moto {
    child: Child,
    log: tempfile::NamedTempFile,
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Moto {
    pub async fn start() -> Moto {
        let venv = xtask::venv::S3_SERVER
            .ensure()
            .expect("installing moto's S3 server from PyPI (xtask/python/s3-server.txt)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", SETUP_REQUESTS.to_string())
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("starting moto_server");
        let mut moto = Moto {
            child,
            log,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "xtask-backups".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(60) {
                panic!(
                    "moto_server did not listen on {port} in 60 s:\n{}",
                    moto.log()
                );
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited ({status}):\n{}", moto.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        moto.set_up().await;
        moto
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// An unsigned request with an Authorization header naming `service`,
    /// which is how moto's one server tells IAM from S3.
    async fn unsigned(
        &self,
        method: reqwest::Method,
        path: &str,
        service: &str,
        form: &[(&str, &str)],
    ) -> String {
        let scope = format!(
            "setup/{}/us-east-1/{service}/aws4_request",
            chrono::Utc::now().format("%Y%m%d")
        );
        let response = reqwest::Client::new()
            .request(method, format!("{}{path}", self.endpoint))
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=0"),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form.iter()
                    .map(|(k, v)| format!("{k}={}", uri_encode(v, false)))
                    .collect::<Vec<_>>()
                    .join("&"),
            )
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(
            status.is_success(),
            "moto set-up {path} ({service}): {status}\n{body}\n{}",
            self.log()
        );
        body
    }

    async fn set_up(&mut self) {
        let iam = |action: &'static str| {
            vec![
                ("Action", action),
                ("Version", "2010-05-08"),
                ("UserName", "backups"),
            ]
        };
        let post = reqwest::Method::POST;
        self.unsigned(post.clone(), "/", "iam", &iam("CreateUser"))
            .await;
        let key = self
            .unsigned(post.clone(), "/", "iam", &iam("CreateAccessKey"))
            .await;
        let mut policy = iam("PutUserPolicy");
        policy.push(("PolicyName", "backups"));
        let document = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        policy.push(("PolicyDocument", document));
        self.unsigned(post, "/", "iam", &policy).await;
        let bucket = format!("/{}", self.bucket);
        self.unsigned(reqwest::Method::PUT, &bucket, "s3", &[])
            .await;
        let value = |tag: &str| {
            let open = format!("<{tag}>");
            let start = key.find(&open).expect(&key) + open.len();
            key[start..start + key[start..].find('<').unwrap()].to_owned()
        };
        self.access_key_id = value("AccessKeyId");
        self.secret_access_key = value("SecretAccessKey");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
