// The live analytics feed: one websocket to the relay, reconnecting by itself with back-off.
import { useEffect, useRef, useState } from "react";
import { currentToken, expireSession } from "./session";

export type AnalyticsResult = {
  metricType: string;
  totalEventsCreated: number;
  avgAppointmentsPerHour: number;
  windowStartTime: number;
  windowEndTime: number;
  timestamp: number;
};

export type FeedState = {
  status: "connecting" | "live" | "reconnecting" | "offline";
  latest: AnalyticsResult | null;
  history: AnalyticsResult[];
  receivedAt: number | null;
  retryInSeconds: number | null;
};

const HISTORY = 240;
const POLICY_VIOLATION = 1008;
export const BACKOFF_MS = { first: 500, max: 15_000 };

export function nextDelay(attempt: number, random = Math.random): number {
  // Exponential with full jitter: replicas restarting together are not hit by every browser at once.
  const ceiling = Math.min(BACKOFF_MS.max, BACKOFF_MS.first * 2 ** attempt);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

function parse(text: string): AnalyticsResult | null {
  try {
    const v = JSON.parse(text) as AnalyticsResult;
    return typeof v.totalEventsCreated === "number" ? v : null;
  } catch {
    return null;
  }
}

export function useAnalyticsFeed(url: string): FeedState {
  const [state, setState] = useState<FeedState>({
    status: "connecting",
    latest: null,
    history: [],
    receivedAt: null,
    retryInSeconds: null,
  });
  const attempt = useRef(0);

  useEffect(() => {
    if (!url) return;
    let socket: WebSocket | null = null;
    let timer: number | undefined;
    let stopped = false;

    const connect = () => {
      const token = currentToken();
      if (!token) return expireSession();
      setState((s) => ({ ...s, status: attempt.current ? "reconnecting" : "connecting", retryInSeconds: null }));
      socket = new WebSocket(`${url}?token=${encodeURIComponent(token)}`);
      socket.onopen = () => {
        attempt.current = 0;
        setState((s) => ({ ...s, status: "live" }));
      };
      socket.onmessage = (event) => {
        const result = parse(String(event.data));
        if (!result) return;
        setState((s) => ({
          ...s,
          status: "live",
          latest: result,
          receivedAt: Date.now(),
          history: [...s.history, result].slice(-HISTORY),
        }));
      };
      socket.onclose = (event) => {
        if (stopped) return;
        if (event.code === POLICY_VIOLATION && !currentToken()) return expireSession();
        const delay = nextDelay(attempt.current++);
        setState((s) => ({ ...s, status: "reconnecting", retryInSeconds: Math.ceil(delay / 1000) }));
        timer = window.setTimeout(connect, delay);
      };
    };

    const online = () => {
      if (socket?.readyState === WebSocket.CLOSED) {
        window.clearTimeout(timer);
        attempt.current = 0;
        connect();
      }
    };
    window.addEventListener("online", online);
    connect();
    return () => {
      stopped = true;
      window.removeEventListener("online", online);
      window.clearTimeout(timer);
      socket?.close(1000);
    };
  }, [url]);

  return state;
}
