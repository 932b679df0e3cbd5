import {
  Alert,
  Button,
  Card,
  Group,
  NativeSelect,
  SimpleGrid,
  Stack,
  Table,
  Text,
  TextInput,
  Textarea,
} from "@mantine/core";
import { useForm } from "@mantine/form";
import { keepPreviousData, useQuery, useQueryClient } from "@tanstack/react-query";
import { useNavigate, useParams, useSearch } from "@tanstack/react-router";
import { useMemo, useState } from "react";
import {
  appointmentsBook,
  appointmentsGetAppointment,
  appointmentsListAppointments,
  patientsListPatients,
} from "../client/sdk.gen";
import { AppointmentActions } from "../components/AppointmentActions";
import { DoctorPicker, PatientPicker } from "../components/Pickers";
import { Empty, ErrorState, Loading, PageHeader, StatusBadge, notifyDone, MissingRecord } from "../components/ui";
import { Paging } from "../components/Paging";
import { ApiError, errorMessage, unwrap } from "../lib/api";
import { clashMessage, endOf, findClash, useOwnDoctorId } from "../lib/appointments";
import { formatDateTime, formatTime, isoDateIn, startOfDay, zonedIso } from "../lib/format";
import { useClinic, useDoctorName, useMe } from "../lib/hooks";
import { PatientName } from "../components/PatientName";
import { AnchorLink, ButtonLink } from "../components/links";

const PAGE = 20;
const STATUSES = ["BOOKED", "COMPLETED", "CANCELLED", "NO_SHOW"] as const;
type Filters = { doctorId?: string; patientId?: string; status?: string; from?: string; to?: string; offset?: number };

export function AppointmentsPage() {
  const me = useMe().data;
  const clinic = useClinic();
  const doctorName = useDoctorName();
  const navigate = useNavigate();
  const f = useSearch({ strict: false }) as Filters;
  const offset = f.offset ?? 0;
  const query = {
    doctorId: f.doctorId || undefined,
    patientId: f.patientId || undefined,
    status: (f.status || undefined) as (typeof STATUSES)[number] | undefined,
    from: f.from ? zonedIso(f.from, "00:00", clinic.timeZone) : undefined,
    to: f.to ? startOfDay(new Date(zonedIso(f.to, "00:00", clinic.timeZone)), clinic.timeZone, 1).toISOString() : undefined,
    limit: PAGE,
    offset,
  };
  const list = useQuery({
    queryKey: ["appointments", query],
    queryFn: () => unwrap(appointmentsListAppointments({ query })),
    placeholderData: keepPreviousData,
  });
  const set = (next: Filters) =>
    navigate({ to: "/appointments", search: { ...f, ...next, offset: next.offset ?? 0 }, replace: true });
  const clinicRole = me?.role !== "patient";

  return (
    <>
      <PageHeader
        title="Appointments"
        actions={
          <>
            <ButtonLink variant="light" to="/appointments/calendar">
              Calendar
            </ButtonLink>
            <ButtonLink to="/appointments/new">
              Book appointment
            </ButtonLink>
          </>
        }
      />
      <Card withBorder mb="md" component="form" role="search" aria-label="Filter appointments" onSubmit={(e) => e.preventDefault()}>
        <SimpleGrid cols={{ base: 1, xs: 2, md: 5 }}>
          {me?.role !== "doctor" ? (
            <DoctorPicker allowAll value={f.doctorId ?? ""} onChange={(doctorId) => set({ doctorId })} />
          ) : null}
          {clinicRole ? (
            <PatientPicker clearable value={f.patientId ?? null} onChange={(id) => set({ patientId: id ?? undefined })} />
          ) : null}
          <NativeSelect
            label="Status"
            value={f.status ?? ""}
            onChange={(e) => set({ status: e.currentTarget.value })}
            data={[{ value: "", label: "Any status" }, ...STATUSES.map((s) => ({ value: s, label: s.replace("_", "-") }))]}
          />
          <TextInput label="From" type="date" value={f.from ?? ""} onChange={(e) => set({ from: e.currentTarget.value })} />
          <TextInput label="To" type="date" value={f.to ?? ""} onChange={(e) => set({ to: e.currentTarget.value })} />
        </SimpleGrid>
      </Card>
      {list.isPending ? (
        <Loading label="Loading appointments…" />
      ) : list.isError ? (
        <ErrorState error={list.error} title="Could not load appointments" />
      ) : list.data.items.length === 0 ? (
        <Empty>No appointments match.</Empty>
      ) : (
        <>
          <Table.ScrollContainer minWidth={640}>
            <Table striped aria-busy={list.isFetching}>
              <caption className="visually-hidden">Appointments</caption>
              <Table.Thead>
                <Table.Tr>
                  <Table.Th scope="col">When</Table.Th>
                  <Table.Th scope="col">Patient</Table.Th>
                  <Table.Th scope="col">Doctor</Table.Th>
                  <Table.Th scope="col">Length</Table.Th>
                  <Table.Th scope="col">Status</Table.Th>
                  <Table.Th scope="col">Actions</Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {list.data.items.map((a) => (
                  <Table.Tr key={a.id}>
                    <Table.Td>
                      <AnchorLink to="/appointments/$appointmentId" params={{ appointmentId: a.id }}>
                        {formatDateTime(a.time, clinic.timeZone)}
                      </AnchorLink>
                    </Table.Td>
                    <Table.Td>
                      <PatientName id={a.patientId} />
                    </Table.Td>
                    <Table.Td>{doctorName(a.doctorId)}</Table.Td>
                    <Table.Td>{a.durationMinutes} min</Table.Td>
                    <Table.Td>
                      <StatusBadge status={a.status} />
                    </Table.Td>
                    <Table.Td>
                      <AppointmentActions appointment={a} when={formatDateTime(a.time, clinic.timeZone)} />
                    </Table.Td>
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          </Table.ScrollContainer>
          <Paging label="Appointment pages" total={list.data.total} limit={PAGE} offset={offset} onChange={(o) => set({ offset: o })} />
        </>
      )}
    </>
  );
}

export function AppointmentPage() {
  const { appointmentId } = useParams({ strict: false }) as { appointmentId: string };
  const clinic = useClinic();
  const doctorName = useDoctorName();
  const a = useQuery({
    queryKey: ["appointment", appointmentId],
    queryFn: () => unwrap(appointmentsGetAppointment({ path: { appointment_id: appointmentId } })),
    retry: false,
  });
  if (a.isPending) return <Loading label="Loading appointment…" />;
  if (a.isError) return <MissingRecord what="Appointment" error={a.error} />;
  const when = formatDateTime(a.data.time, clinic.timeZone);
  return (
    <>
      <PageHeader title={`Appointment on ${when}`} />
      <Card withBorder maw={640}>
        <dl className="details">
          <dt>Patient</dt>
          <dd>
            <AnchorLink to="/patients/$patientId" params={{ patientId: a.data.patientId }}>
              <PatientName id={a.data.patientId} />
            </AnchorLink>
          </dd>
          <dt>Doctor</dt>
          <dd>{doctorName(a.data.doctorId)}</dd>
          <dt>Time</dt>
          <dd>
            {when} – {formatTime(endOf(a.data), clinic.timeZone)} ({clinic.timeZone})
          </dd>
          <dt>Reason</dt>
          <dd>{a.data.reason || "Not given"}</dd>
          <dt>Status</dt>
          <dd>
            <StatusBadge status={a.data.status} />
          </dd>
        </dl>
        <Group mt="md">
          <AppointmentActions appointment={a.data} when={when} />
        </Group>
      </Card>
    </>
  );
}

type BookValues = { patientId: string | null; doctorId: string; date: string; time: string; duration: string; reason: string };

export function BookPage() {
  const me = useMe().data;
  const clinic = useClinic();
  const doctorName = useDoctorName();
  const ownDoctor = useOwnDoctorId();
  const search = useSearch({ strict: false }) as { patientId?: string; doctorId?: string };
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const own = useQuery({
    queryKey: ["patients", "own"],
    queryFn: () => unwrap(patientsListPatients({ query: { limit: 1 } })),
    enabled: me?.role === "patient",
  });
  const [conflict, setConflict] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  // One key per attempt: a retried submit after a lost answer cannot book twice.
  const [attemptKey, setAttemptKey] = useState(() => crypto.randomUUID());
  const tomorrow = useMemo(() => isoDateIn(new Date(Date.now() + 86_400_000), clinic.timeZone), [clinic.timeZone]);
  const form = useForm<BookValues>({
    initialValues: {
      patientId: search.patientId ?? null,
      doctorId: search.doctorId ?? "",
      date: tomorrow,
      time: "09:00",
      duration: "30",
      reason: "",
    },
    validate: {
      patientId: (v) => (v || me?.role === "patient" ? null : "Choose the patient"),
      doctorId: (v) => (v || ownDoctor ? null : "Choose a doctor"),
      date: (v) => (v ? null : "Choose a date"),
      time: (v) => (v ? null : "Choose a time"),
    },
    onValuesChange: () => {
      setConflict(null);
      setAttemptKey(crypto.randomUUID());
    },
  });

  if (me?.role === "patient" && own.isSuccess && own.data.items.length === 0) {
    return (
      <>
        <PageHeader title="Book appointment" />
        <Text>
          Create your record first:{" "}
          <AnchorLink to="/patients">
            My record
          </AnchorLink>
          .
        </Text>
      </>
    );
  }

  const submit = form.onSubmit(async (v) => {
    setError(null);
    setConflict(null);
    const patientId = me?.role === "patient" ? own.data?.items[0]?.id ?? "" : v.patientId ?? "";
    const doctorId = ownDoctor ?? v.doctorId;
    const time = zonedIso(v.date, v.time, clinic.timeZone);
    const minutes = Number(v.duration);
    setBusy(true);
    try {
      const booked = await unwrap(
        appointmentsBook({
          body: { patientId, doctorId, time, durationMinutes: minutes, reason: v.reason || null },
          headers: { "Idempotency-Key": attemptKey },
        }),
      );
      await queryClient.invalidateQueries({ queryKey: ["appointments"] });
      notifyDone(`Booked with ${doctorName(doctorId)} on ${formatDateTime(booked.time, clinic.timeZone)}.`);
      await navigate({ to: "/appointments/$appointmentId", params: { appointmentId: booked.id } });
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) {
        const clash = await findClash(time, minutes, { doctorId, patientId });
        setConflict(clashMessage(clash, doctorName(doctorId), clinic.timeZone));
      } else if (e instanceof ApiError && Object.keys(e.fieldErrors()).length) {
        const fe = e.fieldErrors();
        form.setErrors({ date: fe.time, duration: fe.durationMinutes, reason: fe.reason, patientId: fe.patientId, doctorId: fe.doctorId });
        setError("Some fields need attention.");
      } else setError(errorMessage(e));
      setAttemptKey(crypto.randomUUID());
    } finally {
      setBusy(false);
    }
  });

  return (
    <>
      <PageHeader title="Book appointment" />
      <form onSubmit={submit} noValidate>
        <Stack maw={560}>
          {error ? (
            <Alert color="red" role="alert" title="Not booked">
              {error}
            </Alert>
          ) : null}
          {me?.role === "patient" ? null : (
            <PatientPicker required value={form.values.patientId} onChange={(id) => form.setFieldValue("patientId", id)} error={form.errors.patientId} />
          )}
          {ownDoctor ? (
            <Text>
              Doctor: <strong>{doctorName(ownDoctor)}</strong>
            </Text>
          ) : (
            <DoctorPicker value={form.values.doctorId} onChange={(id) => form.setFieldValue("doctorId", id)} error={form.errors.doctorId} />
          )}
          <Group grow align="flex-start">
            <TextInput label="Date" type="date" required {...form.getInputProps("date")} />
            <TextInput
              label="Time"
              type="time"
              required
              step={300}
              {...form.getInputProps("time")}
              description={`Clinic time (${clinic.timeZone})`}
              inputWrapperOrder={["label", "input", "description", "error"]}
            />
          </Group>
          <NativeSelect
            label="Duration"
            data={["15", "30", "45", "60", "90"].map((m) => ({ value: m, label: `${m} minutes` }))}
            {...form.getInputProps("duration")}
          />
          {conflict ? (
            <Alert color="orange" role="alert" title="That time is taken" className="conflict">
              {conflict}
            </Alert>
          ) : null}
          <Textarea label="Reason (optional)" autosize minRows={2} {...form.getInputProps("reason")} />
          <Group>
            <Button type="submit" loading={busy}>
              Book appointment
            </Button>
            <ButtonLink variant="default" to="/appointments">
              Cancel
            </ButtonLink>
          </Group>
        </Stack>
      </form>
    </>
  );
}

