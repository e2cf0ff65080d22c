// The one poll of the dashboard, for runs (backtests, optimizations): the API has no WebSocket
// for them. It reads only while the run is active, and backs off while nothing changes
// (1 s, then up to 8 s), so an idle page costs the head node little; it ends with the run or
// when the page is left.

const FIRST_MS = 1000;
const MAX_MS = 8000;

/** Whether a run's status means it may still change. */
export function active(status) {
  return status === "queued" || status === "running" || status === "pending" || status === "cancelling";
}

/**
 * Call `step()` until it returns false; the delay resets to 1 s when it returns "changed".
 * @param {() => Promise<boolean|"changed">} step
 * @returns {() => void} stop
 */
export function pollWhileActive(step) {
  let delay = FIRST_MS;
  let timer = null;
  let stopped = false;
  async function tick() {
    if (stopped) return;
    let more;
    try {
      more = await step();
    } catch {
      more = true; // a failed read (a restart of the head node): keep trying, slower
    }
    if (stopped || more === false) return;
    delay = more === "changed" ? FIRST_MS : Math.min(MAX_MS, delay * 2);
    timer = setTimeout(tick, delay);
  }
  timer = setTimeout(tick, FIRST_MS);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
