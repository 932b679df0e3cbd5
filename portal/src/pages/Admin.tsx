// Admin: doctors (with their fee), users and roles, the audit trail.
import {
  Alert,
  Anchor,
  Button,
  Card,
  Grid,
  NativeSelect,
  PasswordInput,
  SimpleGrid,
  Stack,
  Switch,
  Table,
  Text,
  TextInput,
  Title,
} from "@mantine/core";
import { useForm } from "@mantine/form";
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useNavigate, useSearch } from "@tanstack/react-router";
import { useState } from "react";
import { auditListAudit, doctorsCreateDoctor, usersCreateUser, usersListUsers, usersUpdateUser } from "../client/sdk.gen";
import type { Role, UserPublic } from "../client/types.gen";
import { Empty, ErrorState, Loading, PageHeader, notifyDone, notifyFailed } from "../components/ui";
import { Paging } from "../components/Paging";
import { ApiError, errorMessage, unwrap } from "../lib/api";
import { formatDateTime, formatMoney, shortId, zonedIso } from "../lib/format";
import { useClinic, useDoctors, useMe } from "../lib/hooks";
import { ROLE_LABEL } from "../lib/nav";
import { AnchorLink } from "../components/links";

const ROLES: Role[] = ["admin", "staff", "doctor", "patient"];
const PAGE = 20;

function useFormErrors<T>(form: { setErrors: (e: Record<string, string>) => void }, known: (keyof T)[]) {
  const [error, setError] = useState<string | null>(null);
  const fail = (e: unknown) => {
    if (e instanceof ApiError) {
      const fields = Object.fromEntries(Object.entries(e.fieldErrors()).filter(([k]) => known.includes(k as keyof T)));
      if (Object.keys(fields).length) {
        form.setErrors(fields);
        setError("Some fields need attention.");
        return;
      }
    }
    setError(errorMessage(e));
  };
  return { error, setError, fail };
}

export function DoctorsPage() {
  const clinic = useClinic();
  const doctors = useDoctors();
  const queryClient = useQueryClient();
  const doctorUsers = useQuery({
    queryKey: ["users", { role: "doctor" }],
    queryFn: () => unwrap(usersListUsers({ query: { role: "doctor", limit: 100 } })),
  });
  type V = { name: string; specialty: string; fee: string; userId: string };
  const form = useForm<V>({
    initialValues: { name: "", specialty: "", fee: "", userId: "" },
    validate: {
      name: (v) => (v.trim() ? null : "Enter the doctor's name"),
      specialty: (v) => (v.trim() ? null : "Enter a specialty"),
      fee: (v) => (/^\d+(\.\d{1,2})?$/.test(v.trim()) && Number(v) > 0 ? null : "Enter a fee such as 120.00"),
    },
  });
  const { error, setError, fail } = useFormErrors<V>(form, ["name", "specialty", "fee", "userId"]);
  const create = useMutation({
    mutationFn: (v: V) =>
      unwrap(doctorsCreateDoctor({ body: { name: v.name, specialty: v.specialty, fee: v.fee.trim(), userId: v.userId || null } })),
    onSuccess: async (d) => {
      await queryClient.invalidateQueries({ queryKey: ["doctors"] });
      form.reset();
      setError(null);
      notifyDone(`${d.name} is added with a fee of ${formatMoney(d.fee, clinic.currency)}.`);
    },
    onError: fail,
  });
  const linked = new Set((doctors.data?.items ?? []).map((d) => d.userId).filter(Boolean));

  return (
    <>
      <PageHeader title="Doctors" />
      <Grid gap="lg">
        <Grid.Col span={{ base: 12, md: 7 }}>
          {doctors.isPending ? (
            <Loading label="Loading doctors…" />
          ) : doctors.isError ? (
            <ErrorState error={doctors.error} />
          ) : doctors.data.items.length === 0 ? (
            <Empty>No doctors yet. Add the first one.</Empty>
          ) : (
            <Table.ScrollContainer minWidth={420}>
              <Table striped>
                <caption className="visually-hidden">Doctors</caption>
                <Table.Thead>
                  <Table.Tr>
                    <Table.Th scope="col">Name</Table.Th>
                    <Table.Th scope="col">Specialty</Table.Th>
                    <Table.Th scope="col" ta="right">Fee</Table.Th>
                    <Table.Th scope="col">Calendar</Table.Th>
                  </Table.Tr>
                </Table.Thead>
                <Table.Tbody>
                  {doctors.data.items.map((d) => (
                    <Table.Tr key={d.id}>
                      <Table.Td>{d.name}</Table.Td>
                      <Table.Td>{d.specialty}</Table.Td>
                      <Table.Td ta="right">{formatMoney(d.fee, clinic.currency)}</Table.Td>
                      <Table.Td>
                        <AnchorLink to="/appointments/calendar" search={{ doctorId: d.id }} aria-label={`Calendar of ${d.name}`}>
                          Calendar
                        </AnchorLink>
                      </Table.Td>
                    </Table.Tr>
                  ))}
                </Table.Tbody>
              </Table>
            </Table.ScrollContainer>
          )}
        </Grid.Col>
        <Grid.Col span={{ base: 12, md: 5 }}>
          <Card withBorder component="section" aria-labelledby="new-doctor">
            <Title order={2} size="h3" id="new-doctor" mb="sm">
              Add a doctor
            </Title>
            <form onSubmit={form.onSubmit((v) => create.mutate(v))} noValidate>
              <Stack>
                {error ? <Alert color="red" role="alert" title="Not added">{error}</Alert> : null}
                <TextInput label="Name" required {...form.getInputProps("name")} />
                <TextInput label="Specialty" required {...form.getInputProps("specialty")} />
                <TextInput label="Fee" required inputMode="decimal" description={`In ${clinic.currency}, e.g. 120.00`} {...form.getInputProps("fee")} />
                <NativeSelect
                  label="Sign-in account"
                  description="A user with the doctor role, so the doctor sees their own calendar"
                  data={[
                    { value: "", label: "None" },
                    ...(doctorUsers.data?.items ?? []).filter((u) => !linked.has(u.id)).map((u) => ({ value: u.id, label: u.email })),
                  ]}
                  {...form.getInputProps("userId")}
                />
                <Button type="submit" loading={create.isPending}>
                  Add doctor
                </Button>
              </Stack>
            </form>
          </Card>
        </Grid.Col>
      </Grid>
    </>
  );
}

export function UsersPage() {
  const me = useMe().data;
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const f = useSearch({ strict: false }) as { role?: Role | ""; offset?: number };
  const offset = f.offset ?? 0;
  const query = { role: f.role || undefined, limit: PAGE, offset };
  const list = useQuery({
    queryKey: ["users", query],
    queryFn: () => unwrap(usersListUsers({ query })),
    placeholderData: keepPreviousData,
  });
  type V = { email: string; password: string; role: Role };
  const form = useForm<V>({
    initialValues: { email: "", password: "", role: "staff" },
    validate: {
      email: (v) => (/^\S+@\S+\.\S+$/.test(v.trim()) ? null : "Enter an email address"),
      password: (v) => (v.length >= 10 ? null : "Use at least 10 characters"),
    },
  });
  const { error, setError, fail } = useFormErrors<V>(form, ["email", "password", "role"]);
  const create = useMutation({
    mutationFn: (v: V) => unwrap(usersCreateUser({ body: { ...v, email: v.email.trim() } })),
    onSuccess: async (u) => {
      await queryClient.invalidateQueries({ queryKey: ["users"] });
      form.reset();
      setError(null);
      notifyDone(`${u.email} can now sign in as ${ROLE_LABEL[u.role].toLowerCase()}.`);
    },
    onError: (e) => (e instanceof ApiError && e.status === 409 ? setError("A user with this email already exists.") : fail(e)),
  });
  const update = useMutation({
    mutationFn: ({ id, body }: { id: string; body: { role?: Role; isActive?: boolean } }) =>
      unwrap(usersUpdateUser({ path: { user_id: id }, body })),
    onSuccess: async (u: UserPublic) => {
      await queryClient.invalidateQueries({ queryKey: ["users"] });
      notifyDone(`${u.email}: ${ROLE_LABEL[u.role].toLowerCase()}, ${u.isActive ? "active" : "deactivated"}.`);
    },
    onError: (e) => notifyFailed(e, "The user did not change"),
  });
  const set = (next: typeof f) => navigate({ to: "/admin/users", search: { ...f, ...next, offset: next.offset ?? 0 }, replace: true });

  return (
    <>
      <PageHeader title="Users" />
      <Grid gap="lg">
        <Grid.Col span={{ base: 12, md: 8 }}>
          <NativeSelect
            label="Role"
            maw={240}
            mb="md"
            value={f.role ?? ""}
            onChange={(e) => set({ role: e.currentTarget.value as Role | "" })}
            data={[{ value: "", label: "Every role" }, ...ROLES.map((r) => ({ value: r, label: ROLE_LABEL[r] }))]}
          />
          {list.isPending ? (
            <Loading label="Loading users…" />
          ) : list.isError ? (
            <ErrorState error={list.error} />
          ) : list.data.items.length === 0 ? (
            <Empty>No users match.</Empty>
          ) : (
            <>
              <Table.ScrollContainer minWidth={560}>
                <Table striped>
                  <caption className="visually-hidden">Users</caption>
                  <Table.Thead>
                    <Table.Tr>
                      <Table.Th scope="col">Email</Table.Th>
                      <Table.Th scope="col">Role</Table.Th>
                      <Table.Th scope="col">Active</Table.Th>
                      <Table.Th scope="col">Since</Table.Th>
                    </Table.Tr>
                  </Table.Thead>
                  <Table.Tbody>
                    {list.data.items.map((u) => (
                      <Table.Tr key={u.id}>
                        <Table.Td>{u.email}</Table.Td>
                        <Table.Td>
                          <NativeSelect
                            aria-label={`Role of ${u.email}`}
                            size="xs"
                            value={u.role}
                            disabled={u.id === me?.id}
                            onChange={(e) => update.mutate({ id: u.id, body: { role: e.currentTarget.value as Role } })}
                            data={ROLES.map((r) => ({ value: r, label: ROLE_LABEL[r] }))}
                          />
                        </Table.Td>
                        <Table.Td>
                          <Switch
                            aria-label={`${u.email} may sign in`}
                            checked={u.isActive}
                            disabled={u.id === me?.id}
                            onChange={(e) => update.mutate({ id: u.id, body: { isActive: e.currentTarget.checked } })}
                          />
                        </Table.Td>
                        <Table.Td>{formatDateTime(u.createdAt, "UTC").split(",")[0]}</Table.Td>
                      </Table.Tr>
                    ))}
                  </Table.Tbody>
                </Table>
              </Table.ScrollContainer>
              <Paging label="User pages" total={list.data.total} limit={PAGE} offset={offset} onChange={(o) => set({ offset: o })} />
            </>
          )}
        </Grid.Col>
        <Grid.Col span={{ base: 12, md: 4 }}>
          <Card withBorder component="section" aria-labelledby="new-user">
            <Title order={2} size="h3" id="new-user" mb="sm">
              Add a user
            </Title>
            <form onSubmit={form.onSubmit((v) => create.mutate(v))} noValidate>
              <Stack>
                {error ? <Alert color="red" role="alert" title="Not added">{error}</Alert> : null}
                <TextInput label="Email" type="email" required autoComplete="off" {...form.getInputProps("email")} />
                <PasswordInput label="Password" required autoComplete="new-password" description="At least 10 characters" {...form.getInputProps("password")} />
                <NativeSelect label="Role" data={ROLES.map((r) => ({ value: r, label: ROLE_LABEL[r] }))} {...form.getInputProps("role")} />
                <Button type="submit" loading={create.isPending}>
                  Add user
                </Button>
              </Stack>
            </form>
          </Card>
        </Grid.Col>
      </Grid>
    </>
  );
}

type AuditFilters = { action?: string; resourceType?: string; resourceId?: string; actorId?: string; since?: string; until?: string; offset?: number };
const ACTIONS = ["read", "list", "create", "update", "login", "register", "download", "pay", "set_cancelled", "set_completed", "set_no_show"];
const RESOURCES = ["patient", "appointment", "invoice", "user", "doctor"];

export function AuditPage() {
  const clinic = useClinic();
  const navigate = useNavigate();
  const f = useSearch({ strict: false }) as AuditFilters;
  const offset = f.offset ?? 0;
  const query = {
    action: f.action || undefined,
    resourceType: f.resourceType || undefined,
    resourceId: f.resourceId?.trim() || undefined,
    actorId: /^[0-9a-f-]{36}$/i.test(f.actorId ?? "") ? f.actorId : undefined,
    since: f.since ? zonedIso(f.since, "00:00", clinic.timeZone) : undefined,
    until: f.until ? zonedIso(f.until, "23:59", clinic.timeZone) : undefined,
    limit: PAGE,
    offset,
  };
  const list = useQuery({
    queryKey: ["audit", query],
    queryFn: () => unwrap(auditListAudit({ query })),
    placeholderData: keepPreviousData,
  });
  const set = (next: AuditFilters) => navigate({ to: "/admin/audit", search: { ...f, ...next, offset: next.offset ?? 0 }, replace: true });

  return (
    <>
      <PageHeader title="Audit trail" />
      <Card withBorder mb="md" component="form" role="search" aria-label="Filter the audit trail" onSubmit={(e) => e.preventDefault()}>
        <SimpleGrid cols={{ base: 1, xs: 2, md: 3, lg: 6 }}>
          <NativeSelect label="Action" value={f.action ?? ""} onChange={(e) => set({ action: e.currentTarget.value })} data={[{ value: "", label: "Any action" }, ...ACTIONS]} />
          <NativeSelect label="Record type" value={f.resourceType ?? ""} onChange={(e) => set({ resourceType: e.currentTarget.value })} data={[{ value: "", label: "Any type" }, ...RESOURCES]} />
          <TextInput label="Record id" value={f.resourceId ?? ""} onChange={(e) => set({ resourceId: e.currentTarget.value })} />
          <TextInput label="Actor id" value={f.actorId ?? ""} onChange={(e) => set({ actorId: e.currentTarget.value })} />
          <TextInput label="From" type="date" value={f.since ?? ""} onChange={(e) => set({ since: e.currentTarget.value })} />
          <TextInput label="Until" type="date" value={f.until ?? ""} onChange={(e) => set({ until: e.currentTarget.value })} />
        </SimpleGrid>
      </Card>
      {list.isPending ? (
        <Loading label="Loading the audit trail…" />
      ) : list.isError ? (
        <ErrorState error={list.error} />
      ) : list.data.items.length === 0 ? (
        <Empty>No audit records match.</Empty>
      ) : (
        <>
          <Table.ScrollContainer minWidth={760}>
            <Table striped>
              <caption className="visually-hidden">Audit records, newest first</caption>
              <Table.Thead>
                <Table.Tr>
                  <Table.Th scope="col">When</Table.Th>
                  <Table.Th scope="col">Who</Table.Th>
                  <Table.Th scope="col">Action</Table.Th>
                  <Table.Th scope="col">Record</Table.Th>
                  <Table.Th scope="col">Outcome</Table.Th>
                  <Table.Th scope="col">Address</Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {list.data.items.map((r) => (
                  <Table.Tr key={r.seq}>
                    <Table.Td>{formatDateTime(r.at, clinic.timeZone)}</Table.Td>
                    <Table.Td>
                      {r.actorId ? (
                        <Anchor component="button" type="button" onClick={() => set({ actorId: r.actorId ?? "" })} ff="monospace" size="sm">
                          {shortId(r.actorId)}
                        </Anchor>
                      ) : (
                        "—"
                      )}{" "}
                      {r.actorRole ? <Text span size="sm">({r.actorRole})</Text> : null}
                    </Table.Td>
                    <Table.Td>{r.action}</Table.Td>
                    <Table.Td>
                      {r.resourceType}
                      {r.resourceId ? <Text span ff="monospace" size="sm"> {shortId(r.resourceId)}</Text> : null}
                    </Table.Td>
                    <Table.Td>{r.outcome}</Table.Td>
                    <Table.Td>{r.clientIp ?? "—"}</Table.Td>
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          </Table.ScrollContainer>
          <Paging label="Audit pages" total={list.data.total} limit={PAGE} offset={offset} onChange={(o) => set({ offset: o })} />
        </>
      )}
    </>
  );
}
