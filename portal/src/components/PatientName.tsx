import { usePatient } from "../lib/hooks";

/** A patient's name from the shared cache (one request per patient, audited as a read). */
export function PatientName({ id }: { id: string }) {
  const p = usePatient(id);
  return <>{p.data?.name ?? (p.isError ? "Patient" : "…")}</>;
}
