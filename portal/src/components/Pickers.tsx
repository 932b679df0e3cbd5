// Pickers for a patient (searched on the server as you type) and a doctor (the clinic's list).
import { NativeSelect, Select } from "@mantine/core";
import { useDebouncedValue } from "@mantine/hooks";
import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { patientsListPatients } from "../client/sdk.gen";
import { unwrap } from "../lib/api";
import { formatDate } from "../lib/format";
import { useDoctors, usePatient } from "../lib/hooks";

export function PatientPicker({
  value,
  onChange,
  label = "Patient",
  error,
  required,
  clearable,
}: {
  value: string | null;
  onChange: (id: string | null) => void;
  label?: string;
  error?: React.ReactNode;
  required?: boolean;
  clearable?: boolean;
}) {
  const [search, setSearch] = useState("");
  const [q] = useDebouncedValue(search, 200);
  const selected = usePatient(value ?? undefined).data;
  const found = useQuery({
    queryKey: ["patients", "picker", q],
    queryFn: () => unwrap(patientsListPatients({ query: { q: q || undefined, limit: 20 } })),
    staleTime: 10_000,
  });
  const items = found.data?.items ?? [];
  const data = items.map((p) => ({
    value: p.id,
    label: p.dateOfBirth ? `${p.name} (${formatDate(p.dateOfBirth)})` : p.name,
  }));
  if (selected && !data.some((d) => d.value === selected.id)) {
    data.unshift({
      value: selected.id,
      label: selected.dateOfBirth ? `${selected.name} (${formatDate(selected.dateOfBirth)})` : selected.name,
    });
  }
  return (
    <Select
      label={label}
      placeholder="Type a name"
      searchable
      clearable={clearable}
      required={required}
      error={error}
      data={data}
      value={value}
      onChange={(v) => onChange(v)}
      searchValue={search}
      onSearchChange={setSearch}
      filter={({ options }) => options} // the server already filtered (ignoring case and accents)
      nothingFoundMessage={found.isFetching ? "Searching…" : "No patient found"}
    />
  );
}

export function DoctorPicker({
  value,
  onChange,
  label = "Doctor",
  error,
  allowAll,
  disabled,
}: {
  value: string;
  onChange: (id: string) => void;
  label?: string;
  error?: React.ReactNode;
  allowAll?: boolean;
  disabled?: boolean;
}) {
  const doctors = useDoctors();
  const options = (doctors.data?.items ?? []).map((d) => ({ value: d.id, label: `${d.name} — ${d.specialty}` }));
  return (
    <NativeSelect
      label={label}
      value={value}
      disabled={disabled}
      onChange={(e) => onChange(e.currentTarget.value)}
      error={error}
      data={[{ value: "", label: allowAll ? "All doctors" : "Choose a doctor" }, ...options]}
    />
  );
}
