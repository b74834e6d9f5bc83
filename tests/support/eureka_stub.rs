//! A scripted Eureka stub for registry tests: per path, a list of
//! answers (status, body) served in order, the last one repeated.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub delay_ms: u64,
}

impl Answer {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            body: body.into(),
            delay_ms: 0,
        }
    }
    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: Vec::new(),
            delay_ms: 0,
        }
    }
}

#[derive(Default)]
pub struct Script {
    pub answers: HashMap<String, Vec<Answer>>,
    pub served: HashMap<String, usize>,
    /// (method, path, body) of every request.
    pub log: Vec<(String, String, String)>,
}

pub struct Stub {
    pub port: u16,
    pub script: Arc<Mutex<Script>>,
    task: JoinHandle<()>,
}

impl Stub {
    pub async fn start() -> Stub {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(Mutex::new(Script::default()));
        let s2 = Arc::clone(&script);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let script = Arc::clone(&s2);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let script = Arc::clone(&script);
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_owned();
                            let pq = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.as_str().to_owned())
                                .unwrap_or_default();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let answer = {
                                let mut s = script.lock().unwrap();
                                s.log.push((
                                    method.clone(),
                                    pq.clone(),
                                    String::from_utf8_lossy(&body).into_owned(),
                                ));
                                let key_mp = format!("{method} {path}");
                                let key = if s.answers.contains_key(&key_mp) {
                                    key_mp
                                } else {
                                    path.clone()
                                };
                                let n = *s.served.get(&key).unwrap_or(&0);
                                let a = s
                                    .answers
                                    .get(&key)
                                    .map(|list| list[n.min(list.len() - 1)].clone());
                                *s.served.entry(key).or_default() += 1;
                                a
                            };
                            let answer = answer.unwrap_or(Answer::status(404));
                            if answer.delay_ms > 0 {
                                tokio::time::sleep(std::time::Duration::from_millis(
                                    answer.delay_ms,
                                ))
                                .await;
                            }
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(StatusCode::from_u16(answer.status).unwrap())
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(answer.body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Stub { port, script, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/eureka", self.port)
    }

    /// Answers for `key` ("/eureka/apps/" or "PUT /eureka/apps/X/id").
    pub fn set(&self, key: &str, answers: Vec<Answer>) {
        let mut s = self.script.lock().unwrap();
        s.answers.insert(key.to_owned(), answers);
        s.served.remove(key);
    }

    pub fn log(&self) -> Vec<(String, String, String)> {
        self.script.lock().unwrap().log.clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn record(
    app: &str,
    id: &str,
    port: u16,
    status: &str,
    action: &str,
    metadata: &str,
) -> String {
    format!(
        r#"{{"instanceId":"{id}","hostName":"127.0.0.1","app":"{app}","ipAddr":"127.0.0.1","status":"{status}","overriddenStatus":"UNKNOWN","port":{{"$":{port},"@enabled":"true"}},"securePort":{{"$":443,"@enabled":"false"}},"metadata":{metadata},"actionType":"{action}"}}"#
    )
}

pub fn apps(hash: &str, app: &str, records: &[String]) -> String {
    format!(
        r#"{{"applications":{{"versions__delta":"1","apps__hashcode":"{hash}","application":[{{"name":"{app}","instance":[{}]}}]}}}}"#,
        records.join(",")
    )
}
