//! Which WebSocket messages from the agent carry a route's secret: the
//! route's `websocket` key (DESIGN.md, "Credentials beyond a header
//! placeholder"). A leaf module: the config build checks the list, the
//! proxy's relay reads the result.

/// The kinds of agent → upstream WebSocket message in which a route's own
/// placeholder is replaced by its secret (`websocket = ["text"]` or
/// `["text", "binary"]`). Control frames (ping, pong, close) never are.
/// The default, no kind, leaves the placeholder as data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebSocketKinds {
    /// Text messages (the result must stay UTF-8, so the secret must be).
    pub text: bool,
    /// Binary messages.
    pub binary: bool,
}

impl WebSocketKinds {
    /// Whether any kind is listed: the route sends its secret in frames.
    pub fn any(&self) -> bool {
        self.text || self.binary
    }
}
