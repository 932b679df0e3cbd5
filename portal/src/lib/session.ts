// The signed-in session: the access token and when it expires, kept in localStorage so that a
// reload (or a new tab) stays signed in. Nothing else about the person is stored in the browser.

const KEY = "clinic.session";
const NOTICE_KEY = "clinic.notice";

export type Session = { token: string; expiresAt: number };

type Listener = (session: Session | null) => void;
const listeners = new Set<Listener>();
let expiryTimer: number | undefined;

export function readSession(): Session | null {
  try {
    const raw = localStorage.getItem(KEY);
    if (!raw) return null;
    const value = JSON.parse(raw) as Partial<Session>;
    if (typeof value.token !== "string" || typeof value.expiresAt !== "number") return null;
    return { token: value.token, expiresAt: value.expiresAt };
  } catch {
    return null;
  }
}

export function isExpired(session: Session, now = Date.now()): boolean {
  return session.expiresAt <= now;
}

export function currentToken(): string | undefined {
  const session = readSession();
  return session && !isExpired(session) ? session.token : undefined;
}

export function startSession(token: string, expiresInSeconds: number): void {
  const session = { token, expiresAt: Date.now() + expiresInSeconds * 1000 };
  localStorage.setItem(KEY, JSON.stringify(session));
  localStorage.removeItem(NOTICE_KEY);
  schedule(session);
  emit(session);
}

export function endSession(notice?: string): void {
  localStorage.removeItem(KEY);
  if (notice) localStorage.setItem(NOTICE_KEY, notice);
  window.clearTimeout(expiryTimer);
  emit(null);
}

export const EXPIRED_NOTICE = "Your session has expired. Please sign in again.";

/** The session ran out (by the clock or because the API refused the token). */
export function expireSession(): void {
  if (readSession() !== null) endSession(EXPIRED_NOTICE);
}

/** A message for the sign-in page, shown once. */
export function takeNotice(): string | null {
  const notice = localStorage.getItem(NOTICE_KEY);
  localStorage.removeItem(NOTICE_KEY);
  return notice;
}

export function onSessionChange(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function emit(session: Session | null): void {
  for (const listener of listeners) listener(session);
}

function schedule(session: Session): void {
  window.clearTimeout(expiryTimer);
  // setTimeout keeps at most ~24.8 days; tokens live an hour.
  const delay = Math.min(session.expiresAt - Date.now(), 2 ** 31 - 1);
  expiryTimer = window.setTimeout(expireSession, Math.max(0, delay));
}

/** On start: an expired stored session becomes the sign-in notice; a live one gets its timer. */
export function restoreSession(): void {
  const session = readSession();
  if (session === null) return;
  if (isExpired(session)) expireSession();
  else schedule(session);
}

// Another tab signed in or out: follow it.
window.addEventListener("storage", (event) => {
  if (event.key === KEY) emit(readSession());
});
