//! Two floor filters for the benchmarks, chosen by the plugin configuration:
//! `noop` continues every request untouched; `essential` makes the host
//! calls any filter doing ephemera's inbound job must make — read
//! `authorization`, remove it, set the caller header — and nothing else.
#![expect(
    missing_docs,
    reason = "proxy_wasm::main! generates the undocumented _initialize export"
)]

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Floor {
    Noop,
    Essential,
}

struct Root(Floor);

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.0 = match config.as_slice() {
            b"essential" => Floor::Essential,
            b"noop" => Floor::Noop,
            _ => return false,
        };
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream(self.0)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream(Floor);

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if self.0 == Floor::Essential {
            let headers = MapType::HttpRequestHeaders;
            let token = hostcalls::get_map_value_bytes(headers, "authorization");
            if let Ok(Some(_)) = token {
                let _ = hostcalls::set_map_value_bytes(headers, "authorization", None);
                let _ = hostcalls::set_map_value_bytes(
                    headers,
                    "x-ephemera-caller",
                    Some(b"spiffe://example.org/orders"),
                );
            }
        }
        Action::Continue
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(Root(Floor::Noop)));
}}
