// Shared server state: the clinic, the signed-in user, doctors and patient names.
import { useQuery } from "@tanstack/react-query";
import {
  clinicGetClinic,
  doctorsListDoctors,
  patientsGetPatient,
  usersMe,
} from "../client/sdk.gen";
import type { ClinicPublic, DoctorPublic, UserPublic } from "../client/types.gen";
import { unwrap } from "./api";

export type Role = UserPublic["role"];

export const clinicQuery = {
  queryKey: ["clinic"],
  queryFn: () => unwrap(clinicGetClinic()),
  staleTime: Infinity,
};

export const meQuery = {
  queryKey: ["me"],
  queryFn: () => unwrap(usersMe()),
  staleTime: 5 * 60_000,
};

const FALLBACK_CLINIC: ClinicPublic = { name: "Clinic", currency: "USD", timeZone: "UTC", analyticsWsUrl: "" };

export function useClinic(): ClinicPublic {
  return useQuery(clinicQuery).data ?? FALLBACK_CLINIC;
}

export function useMe() {
  return useQuery(meQuery);
}

/** Every doctor (a clinic has fewer than a hundred); pickers and names read this one list. */
export function useDoctors() {
  return useQuery({
    queryKey: ["doctors", "all"],
    queryFn: () => unwrap(doctorsListDoctors({ query: { limit: 100 } })),
    staleTime: 60_000,
  });
}

export function useDoctorName(): (id: string) => string {
  const doctors = useDoctors().data?.items ?? [];
  const byId = new Map(doctors.map((d: DoctorPublic) => [d.id, d.name]));
  return (id: string) => byId.get(id) ?? "Doctor";
}

/** One patient's name; the query is shared with the patient's page and cached. */
export function usePatient(id: string | undefined) {
  return useQuery({
    queryKey: ["patient", id],
    queryFn: () => unwrap(patientsGetPatient({ path: { patient_id: id! } })),
    enabled: !!id,
    staleTime: 30_000,
    retry: false,
  });
}
