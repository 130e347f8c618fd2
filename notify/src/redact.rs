//! What may be said about a URL. A sink's URL often is its credential (a Slack
//! incoming webhook's path, a token in the query, `user:pass@`), so errors, logs,
//! metrics, API answers, tables and reports name an endpoint by scheme, host and port
//! only.

/// `scheme://host:port` of a URL; never its user, password, path or query.
pub fn url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", u.scheme()),
            (Some(host), None) => format!("{}://{host}", u.scheme()),
            _ => format!("{}:", u.scheme()),
        },
        Err(_) => "<a URL that does not parse>".to_owned(),
    }
}

/// A request error with its causes, without the URL reqwest puts in it.
pub fn request_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_keeps_only_scheme_host_and_port() {
        for (raw, said) in [
            (
                "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
                "https://hooks.slack.com:443",
            ),
            (
                "http://user:SECRET@127.0.0.1:9/x?token=SECRET",
                "http://127.0.0.1:9",
            ),
            ("http://[::1]:8080/a#SECRET", "http://[::1]:8080"),
            ("not a url SECRET", "<a URL that does not parse>"),
        ] {
            assert_eq!(url(raw), said);
        }
    }

    #[tokio::test]
    async fn a_request_error_does_not_carry_its_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{port}/services/SECRET?token=SECRET"
            ))
            .send()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("SECRET"));
        let said = request_error(e);
        assert!(!said.contains("SECRET"), "{said}");
        assert!(said.contains("error sending request"), "{said}");
    }
}
