//! The host of an HTTP `:authority`.

/// `host[:port]` or `[v6]:port` → the host without the port; a bracketed
/// IPv6 literal keeps its brackets, anything else is returned whole.
pub fn host(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            host
        }
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::host;

    #[test]
    fn the_port_goes_and_ipv6_brackets_stay() {
        for (authority, expected) in [
            ("api.example.com", "api.example.com"),
            ("api.example.com:443", "api.example.com"),
            ("[::1]:443", "[::1]"),
            ("[::1]", "[::1]"),
            ("[2001:db8::1]:8443", "[2001:db8::1]"),
            ("::1", "::1"),
            ("host:", "host:"),
            (":443", ":443"),
            ("host:https", "host:https"),
        ] {
            assert_eq!(host(authority), expected, "{authority}");
        }
    }
}
