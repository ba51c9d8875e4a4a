// Small pure helpers for showing people, times and counts.

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const weekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: "short" });
const dateFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const longDateFmt = new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric", month: "long", year: "numeric" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

const DAY = 86400000;

function startOfDay(ms) {
  const d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

/** hue picks a stable colour for a user id. */
export function hue(id) {
  let h = 0;
  for (const c of id) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return h % 360;
}

/** initials are what an avatar shows: up to two characters of the id. */
export function initials(id) {
  const parts = id.split(/[._@]+/).filter(Boolean);
  if (parts.length >= 2) return (parts[0][0] + parts[1][0]).toUpperCase();
  return [...id].slice(0, 2).join("").toUpperCase();
}

/** clock is the time of day of `sec` (seconds since the epoch). */
export function clock(sec) {
  return timeFmt.format(sec * 1000);
}

/** fullTime is the complete date and time, for tooltips. */
export function fullTime(sec) {
  return fullFmt.format(sec * 1000);
}

/** dayKey groups times by local calendar day. */
export function dayKey(sec) {
  return String(startOfDay(sec * 1000));
}

/** dayLabel names a day: Today, Yesterday, or the date. */
export function dayLabel(sec, now = Date.now()) {
  const day = startOfDay(sec * 1000);
  const today = startOfDay(now);
  if (day === today) return "Today";
  if (day === today - DAY) return "Yesterday";
  return longDateFmt.format(sec * 1000);
}

/** listTime is the short time shown in the conversation list. */
export function listTime(sec, now = Date.now()) {
  const ms = sec * 1000;
  const today = startOfDay(now);
  if (ms >= today) return timeFmt.format(ms);
  if (ms >= today - 6 * DAY) return weekdayFmt.format(ms);
  return dateFmt.format(ms);
}

/** count caps a badge number. */
export function count(n) {
  return n > 99 ? "99+" : String(n);
}
