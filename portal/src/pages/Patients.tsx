import { Card, SimpleGrid, Stack, Table, Text, TextInput, Title } from "@mantine/core";
import { useDebouncedValue } from "@mantine/hooks";
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useNavigate, useParams, useSearch } from "@tanstack/react-router";
import {
  appointmentsListAppointments,
  invoicesListInvoices,
  patientsCreatePatient,
  patientsListPatients,
  patientsUpdatePatient,
} from "../client/sdk.gen";
import type { PatientCreate, PatientPublic, PatientUpdate } from "../client/types.gen";
import { PatientForm, valueText } from "../components/PatientForm";
import { Empty, ErrorState, Loading, PageHeader, StatusBadge, notifyDone, MissingRecord } from "../components/ui";
import { Paging } from "../components/Paging";
import { unwrap } from "../lib/api";
import { formatDate, formatDateTime, formatMoney } from "../lib/format";
import { useClinic, useDoctorName, useMe, usePatient } from "../lib/hooks";
import { AnchorLink, ButtonLink } from "../components/links";

const PAGE = 20;

export function PatientsPage() {
  const me = useMe().data;
  const search = useSearch({ strict: false }) as { q?: string; offset?: number };
  const navigate = useNavigate();
  const q = search.q ?? "";
  const offset = search.offset ?? 0;
  const [debounced] = useDebouncedValue(q, 250);
  const list = useQuery({
    queryKey: ["patients", debounced, offset],
    queryFn: () =>
      unwrap(patientsListPatients({ query: { q: debounced || undefined, limit: PAGE, offset } })),
    placeholderData: keepPreviousData,
  });
  const set = (next: { q?: string; offset?: number }) =>
    navigate({ to: "/patients", search: { q: next.q ?? q, offset: next.offset ?? 0 }, replace: true });

  if (me?.role === "patient") return <MyRecord />;
  const canCreate = me?.role === "admin" || me?.role === "staff";

  return (
    <>
      <PageHeader
        title="Patients"
        actions={
          canCreate ? (
            <ButtonLink to="/patients/new">
              New patient
            </ButtonLink>
          ) : null
        }
      />
      <TextInput
        label="Search by name"
        type="search"
        value={q}
        onChange={(e) => set({ q: e.currentTarget.value, offset: 0 })}
        maw={400}
        mb="md"
      />
      {list.isPending ? (
        <Loading label="Loading patients…" />
      ) : list.isError ? (
        <ErrorState error={list.error} title="Could not load patients" />
      ) : list.data.items.length === 0 ? (
        <Empty>{q ? `No patient matches “${q}”.` : "No patients yet."}</Empty>
      ) : (
        <>
          <Table.ScrollContainer minWidth={480}>
            <Table striped highlightOnHover aria-busy={list.isFetching}>
              <caption className="visually-hidden">Patients</caption>
              <Table.Thead>
                <Table.Tr>
                  <Table.Th scope="col">Name</Table.Th>
                  <Table.Th scope="col">Date of birth</Table.Th>
                  <Table.Th scope="col">Condition</Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {list.data.items.map((p) => (
                  <Table.Tr key={p.id}>
                    <Table.Td>
                      <AnchorLink to="/patients/$patientId" params={{ patientId: p.id }}>
                        {p.name}
                      </AnchorLink>
                    </Table.Td>
                    <Table.Td>{p.dateOfBirth ? formatDate(p.dateOfBirth) : "—"}</Table.Td>
                    <Table.Td>{p.condition || "—"}</Table.Td>
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          </Table.ScrollContainer>
          <Paging
            label="Patient pages"
            total={list.data.total}
            limit={PAGE}
            offset={offset}
            onChange={(o) => set({ offset: o })}
          />
        </>
      )}
    </>
  );
}

/** A patient's own entry: their record, or the form to create it. */
function MyRecord() {
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const own = useQuery({
    queryKey: ["patients", "own"],
    queryFn: () => unwrap(patientsListPatients({ query: { limit: 1 } })),
  });
  if (own.isPending) return <Loading label="Loading your record…" />;
  if (own.isError) return <ErrorState error={own.error} />;
  const record = own.data.items[0];
  if (record) return <PatientDetail patient={record} />;
  return (
    <>
      <PageHeader title="Create your record" />
      <Text mb="md">Tell the clinic who you are before you book an appointment.</Text>
      <PatientForm
        submitLabel="Create record"
        onSubmit={async (body) => {
          const created = await unwrap(patientsCreatePatient({ body: body as PatientCreate }));
          await queryClient.invalidateQueries({ queryKey: ["patients"] });
          notifyDone("Your record is saved.");
          await navigate({ to: "/patients/$patientId", params: { patientId: created.id } });
        }}
      />
    </>
  );
}

export function NewPatientPage() {
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  return (
    <>
      <PageHeader title="New patient" />
      <PatientForm
        submitLabel="Create patient"
        onSubmit={async (body) => {
          const created = await unwrap(patientsCreatePatient({ body: body as PatientCreate }));
          await queryClient.invalidateQueries({ queryKey: ["patients"] });
          notifyDone(`${created.name} is added.`);
          await navigate({ to: "/patients/$patientId", params: { patientId: created.id } });
        }}
        onCancel={() => navigate({ to: "/patients" })}
      />
    </>
  );
}

export function PatientPage() {
  const { patientId } = useParams({ strict: false }) as { patientId: string };
  const patient = usePatient(patientId);
  if (patient.isPending) return <Loading label="Loading patient…" />;
  if (patient.isError) return <MissingRecord what="Patient" error={patient.error} />;
  return <PatientDetail patient={patient.data} />;
}

export function EditPatientPage() {
  const { patientId } = useParams({ strict: false }) as { patientId: string };
  const patient = usePatient(patientId);
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const update = useMutation({
    mutationFn: (body: PatientUpdate) =>
      unwrap(patientsUpdatePatient({ path: { patient_id: patientId }, body })),
    onSuccess: async (saved) => {
      queryClient.setQueryData(["patient", patientId], saved);
      await queryClient.invalidateQueries({ queryKey: ["patients"] });
      notifyDone("Changes saved.");
      await navigate({ to: "/patients/$patientId", params: { patientId } });
    },
  });
  if (patient.isPending) return <Loading />;
  if (patient.isError) return <ErrorState error={patient.error} />;
  return (
    <>
      <PageHeader title={`Edit ${patient.data.name}`} />
      <PatientForm
        patient={patient.data}
        submitLabel="Save changes"
        onSubmit={async (body) => {
          await update.mutateAsync(body);
        }}
        onCancel={() => navigate({ to: "/patients/$patientId", params: { patientId } })}
      />
    </>
  );
}

function PatientDetail({ patient }: { patient: PatientPublic }) {
  const me = useMe().data;
  const canEdit = true; // the API allows every role to edit the records it may see
  const attributes = Object.entries(patient.attributes ?? {});
  return (
    <>
      <PageHeader
        title={patient.name}
        actions={
          <>
            {me?.role !== "doctor" ? (
              <ButtonLink variant="light"
                to="/appointments/new"
                search={{ patientId: patient.id }}
              >
                Book appointment
              </ButtonLink>
            ) : null}
            {canEdit ? (
              <ButtonLink to="/patients/$patientId/edit" params={{ patientId: patient.id }}>
                Edit
              </ButtonLink>
            ) : null}
          </>
        }
      />
      <SimpleGrid cols={{ base: 1, md: 2 }} spacing="md">
        <Card withBorder>
          <Title order={2} size="h4" mb="sm">
            Details
          </Title>
          <dl className="details">
            <dt>Date of birth</dt>
            <dd>{patient.dateOfBirth ? formatDate(patient.dateOfBirth) : "Not given"}</dd>
            <dt>Gender</dt>
            <dd>{patient.gender || "Not given"}</dd>
            <dt>Condition</dt>
            <dd>{patient.condition || "None recorded"}</dd>
          </dl>
        </Card>
        <Card withBorder>
          <Title order={2} size="h4" mb="sm">
            Other details
          </Title>
          {attributes.length ? (
            <Table>
              <caption className="visually-hidden">Other details</caption>
              <Table.Thead>
                <Table.Tr>
                  <Table.Th scope="col">Name</Table.Th>
                  <Table.Th scope="col">Value</Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {attributes.map(([k, v]) => (
                  <Table.Tr key={k}>
                    <Table.Td>{k}</Table.Td>
                    <Table.Td>{valueText(v)}</Table.Td>
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          ) : (
            <Text c="dimmed">None recorded.</Text>
          )}
        </Card>
      </SimpleGrid>
      <Stack mt="lg" gap="lg">
        <PatientAppointments patientId={patient.id} />
        <PatientInvoices patientId={patient.id} />
      </Stack>
    </>
  );
}

function PatientAppointments({ patientId }: { patientId: string }) {
  const clinic = useClinic();
  const doctorName = useDoctorName();
  const list = useQuery({
    queryKey: ["appointments", { patientId }],
    queryFn: () => unwrap(appointmentsListAppointments({ query: { patientId, limit: 50 } })),
  });
  return (
    <section aria-labelledby="patient-appointments">
      <Title order={2} size="h3" id="patient-appointments" mb="sm">
        Appointments
      </Title>
      {list.isPending ? (
        <Loading label="Loading appointments…" />
      ) : list.isError ? (
        <ErrorState error={list.error} />
      ) : list.data.items.length === 0 ? (
        <Empty>No appointments yet.</Empty>
      ) : (
        <Table.ScrollContainer minWidth={420}>
          <Table striped>
            <caption className="visually-hidden">Appointments of this patient</caption>
            <Table.Thead>
              <Table.Tr>
                <Table.Th scope="col">When</Table.Th>
                <Table.Th scope="col">Doctor</Table.Th>
                <Table.Th scope="col">Status</Table.Th>
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
                  <Table.Td>{doctorName(a.doctorId)}</Table.Td>
                  <Table.Td>
                    <StatusBadge status={a.status} />
                  </Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </Table.ScrollContainer>
      )}
    </section>
  );
}

function PatientInvoices({ patientId }: { patientId: string }) {
  const clinic = useClinic();
  const list = useQuery({
    queryKey: ["invoices", { patientId }],
    queryFn: () => unwrap(invoicesListInvoices({ query: { patientId, limit: 50 } })),
    // A new booking's invoice arrives within seconds of the booking: look again until it does.
    refetchInterval: 5000,
  });
  return (
    <section aria-labelledby="patient-invoices">
      <Title order={2} size="h3" id="patient-invoices" mb="sm">
        Invoices
      </Title>
      {list.isPending ? (
        <Loading label="Loading invoices…" />
      ) : list.isError ? (
        <ErrorState error={list.error} />
      ) : list.data.items.length === 0 ? (
        <Empty>No invoices yet.</Empty>
      ) : (
        <Table.ScrollContainer minWidth={420}>
          <Table striped>
            <caption className="visually-hidden">Invoices of this patient</caption>
            <Table.Thead>
              <Table.Tr>
                <Table.Th scope="col">Created</Table.Th>
                <Table.Th scope="col">Amount</Table.Th>
                <Table.Th scope="col">Status</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {list.data.items.map((inv) => (
                <Table.Tr key={inv.id}>
                  <Table.Td>
                    <AnchorLink to="/invoices/$invoiceId" params={{ invoiceId: inv.id }}>
                      {formatDateTime(inv.createdAt, clinic.timeZone)}
                    </AnchorLink>
                  </Table.Td>
                  <Table.Td>{formatMoney(inv.amount, inv.currency)}</Table.Td>
                  <Table.Td>
                    <StatusBadge status={inv.status} />
                  </Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </Table.ScrollContainer>
      )}
    </section>
  );
}

