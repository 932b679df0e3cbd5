// Shared appointment logic: the clash behind a 409, status changes, the caller's own doctor.
import { appointmentsListAppointments } from "../client/sdk.gen";
import type { AppointmentPublic } from "../client/types.gen";
import { unwrap } from "./api";
import { formatDateTime, formatTime } from "./format";
import { useDoctors, useMe } from "./hooks";

const MAX_DURATION_MINUTES = 480;

export function endOf(a: Pick<AppointmentPublic, "time" | "durationMinutes">): Date {
  return new Date(new Date(a.time).getTime() + a.durationMinutes * 60_000);
}

/** The booked appointments (that the caller may see) overlapping [start, start + minutes). */
export async function findClash(
  start: string,
  minutes: number,
  who: { doctorId: string; patientId: string },
): Promise<{ appointment: AppointmentPublic; with: "doctor" | "patient" } | null> {
  const begin = new Date(start);
  const end = new Date(begin.getTime() + minutes * 60_000);
  const window = {
    from: new Date(begin.getTime() - MAX_DURATION_MINUTES * 60_000).toISOString(),
    to: end.toISOString(),
    status: "BOOKED" as const,
    limit: 100,
  };
  for (const [kind, query] of [
    ["doctor", { ...window, doctorId: who.doctorId }],
    ["patient", { ...window, patientId: who.patientId }],
  ] as const) {
    try {
      const page = await unwrap(appointmentsListAppointments({ query }));
      const hit = page.items.find((a) => new Date(a.time) < end && endOf(a) > begin);
      if (hit) return { appointment: hit, with: kind };
    } catch {
      // A role that may not list these (a patient asking about the doctor) just learns less.
    }
  }
  return null;
}

export function clashMessage(
  clash: Awaited<ReturnType<typeof findClash>>,
  doctorName: string,
  timeZone: string,
): string {
  if (!clash) {
    return `${doctorName} or the patient already has an appointment at that time. Choose another time.`;
  }
  const a = clash.appointment;
  const who = clash.with === "doctor" ? doctorName : "The patient";
  return `${who} already has an appointment from ${formatDateTime(a.time, timeZone)} to ${formatTime(
    endOf(a),
    timeZone,
  )}. Choose another time.`;
}

/** The doctor record of a doctor-role user (their calendar and bookings are theirs only). */
export function useOwnDoctorId(): string | undefined {
  const me = useMe().data;
  const doctors = useDoctors().data?.items ?? [];
  if (me?.role !== "doctor") return undefined;
  return doctors.find((d) => d.userId === me.id)?.id;
}
