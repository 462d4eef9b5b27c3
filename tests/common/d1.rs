//! The D1 double (`ferry::d1double`) for tests, with the environment pointing ferry at it.

use super::Dir;
use ferry::d1double::{self, Config};

pub const TOKEN: &str = "d1-test-token-that-must-never-be-printed";

/// A double over `d`'s `d1/` at `scale` times real speed, and the environment pointing at it
/// (the client paced for the same scaled budget).
pub fn double(d: &Dir, scale: f64, rate_limit: u64) -> d1double::Running {
    let mut cfg = Config::new(d.path("d1"), TOKEN.into());
    cfg.scale = scale;
    cfg.rate_limit = rate_limit;
    let running = d1double::serve(cfg, 0).unwrap();
    d.set_env("CLOUDFLARE_API_BASE_URL", &running.base_url());
    d.set_env("CLOUDFLARE_API_TOKEN", TOKEN);
    d.set_env("FERRY_D1_RATE", &format!("{rate_limit}/{}", 300.0 / scale));
    d.set_env("FERRY_RETRIES", "2");
    running
}
