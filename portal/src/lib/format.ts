// Dates and money for the person's locale; times always in the clinic's time zone.
import { TZDate } from "@date-fns/tz";

export const locale = typeof navigator !== "undefined" ? navigator.language : "en-US";

const cache = new Map<string, Intl.DateTimeFormat>();
function dtf(timeZone: string, options: Intl.DateTimeFormatOptions): Intl.DateTimeFormat {
  const key = timeZone + JSON.stringify(options);
  let f = cache.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat(locale, { timeZone, ...options });
    cache.set(key, f);
  }
  return f;
}

export function formatDateTime(iso: string, timeZone: string): string {
  return dtf(timeZone, { dateStyle: "medium", timeStyle: "short" }).format(new Date(iso));
}

export function formatTime(iso: string | number | Date, timeZone: string): string {
  return dtf(timeZone, { timeStyle: "short" }).format(new Date(iso));
}

export function formatTimeWithSeconds(iso: string | number | Date, timeZone: string): string {
  return dtf(timeZone, { timeStyle: "medium" }).format(new Date(iso));
}

export function formatDay(date: Date, timeZone: string): string {
  return dtf(timeZone, { weekday: "long", day: "numeric", month: "long" }).format(date);
}

/** A calendar date (date of birth): no time zone shift. */
export function formatDate(isoDate: string): string {
  const [y, m, d] = isoDate.split("-").map(Number);
  return new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeZone: "UTC" }).format(
    new Date(Date.UTC(y, m - 1, d)),
  );
}

export function formatMoney(amount: string | number, currency: string): string {
  return new Intl.NumberFormat(locale, { style: "currency", currency }).format(Number(amount));
}

export function formatNumber(value: number, digits = 0): string {
  return new Intl.NumberFormat(locale, { maximumFractionDigits: digits, minimumFractionDigits: digits }).format(
    value,
  );
}

/** The clinic-zone wall time of a date and time input, as ISO 8601 with its UTC offset. */
export function zonedIso(date: string, time: string, timeZone: string): string {
  const [y, m, d] = date.split("-").map(Number);
  const [hh, mm] = time.split(":").map(Number);
  return new TZDate(y, m - 1, d, hh, mm, 0, timeZone).toISOString();
}

/** Midnight at the start of `date`'s day in the clinic's zone, plus `days`. */
export function startOfDay(date: Date, timeZone: string, days = 0): TZDate {
  const t = new TZDate(date.getTime(), timeZone);
  return new TZDate(t.getFullYear(), t.getMonth(), t.getDate() + days, 0, 0, 0, timeZone);
}

/** Monday 00:00 of the week that holds `date`, in the clinic's zone. */
export function startOfWeek(date: Date, timeZone: string): TZDate {
  const t = new TZDate(date.getTime(), timeZone);
  const back = (t.getDay() + 6) % 7;
  return startOfDay(t, timeZone, -back);
}

/** `YYYY-MM-DD` of an instant in the clinic's zone (for date inputs). */
export function isoDateIn(date: Date, timeZone: string): string {
  const t = new TZDate(date.getTime(), timeZone);
  return `${t.getFullYear()}-${String(t.getMonth() + 1).padStart(2, "0")}-${String(t.getDate()).padStart(2, "0")}`;
}

export function shortId(id: string): string {
  return id.slice(0, 8);
}
