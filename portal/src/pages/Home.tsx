import { Card, Group, SimpleGrid, Stack, Text, Title } from "@mantine/core";
import { useQuery } from "@tanstack/react-query";
import { appointmentsListAppointments, invoicesListInvoices } from "../client/sdk.gen";
import { Empty, ErrorState, Loading, PageHeader, StatusBadge } from "../components/ui";
import { unwrap } from "../lib/api";
import { formatDateTime, formatMoney } from "../lib/format";
import { useClinic, useDoctorName, useMe } from "../lib/hooks";
import { navFor, ROLE_LABEL } from "../lib/nav";
import { PatientName } from "../components/PatientName";
import { AnchorLink, ButtonLink } from "../components/links";

export function HomePage() {
  const me = useMe().data!;
  const clinic = useClinic();
  const doctorName = useDoctorName();
  const from = new Date(Date.now() - 30 * 60_000).toISOString();
  const upcoming = useQuery({
    queryKey: ["appointments", "upcoming", from.slice(0, 15)],
    queryFn: () => unwrap(appointmentsListAppointments({ query: { from, status: "BOOKED", limit: 5 } })),
  });
  const due = useQuery({
    queryKey: ["invoices", "due"],
    queryFn: () => unwrap(invoicesListInvoices({ query: { status: "ISSUED", limit: 5 } })),
    enabled: me.role !== "doctor",
  });
  const places = navFor(me.role).filter((i) => i.to !== "/");

  return (
    <>
      <PageHeader title={`Welcome, ${me.email.split("@")[0]}`} />
      <Text mb="lg">
        Signed in as {ROLE_LABEL[me.role].toLowerCase()} at {clinic.name}. Times are shown in {clinic.timeZone}.
      </Text>
      <SimpleGrid cols={{ base: 1, md: 2 }} spacing="lg">
        <Card withBorder component="section" aria-labelledby="upcoming">
          <Group justify="space-between" mb="sm">
            <Title order={2} size="h3" id="upcoming">
              Next appointments
            </Title>
            <ButtonLink size="xs" to="/appointments/new">
              Book appointment
            </ButtonLink>
          </Group>
          {upcoming.isPending ? (
            <Loading />
          ) : upcoming.isError ? (
            <ErrorState error={upcoming.error} />
          ) : upcoming.data.items.length === 0 ? (
            <Empty>Nothing booked.</Empty>
          ) : (
            <Stack gap="xs" component="ul" className="plain-list">
              {upcoming.data.items.map((a) => (
                <li key={a.id}>
                  <Group justify="space-between" wrap="nowrap">
                    <div>
                      <AnchorLink to="/appointments/$appointmentId" params={{ appointmentId: a.id }}>
                        {formatDateTime(a.time, clinic.timeZone)}
                      </AnchorLink>
                      <Text size="sm">
                        {me.role === "patient" ? doctorName(a.doctorId) : <PatientName id={a.patientId} />}
                      </Text>
                    </div>
                    <StatusBadge status={a.status} />
                  </Group>
                </li>
              ))}
            </Stack>
          )}
        </Card>
        {me.role !== "doctor" ? (
          <Card withBorder component="section" aria-labelledby="due">
            <Title order={2} size="h3" id="due" mb="sm">
              Invoices awaiting payment
            </Title>
            {due.isPending ? (
              <Loading />
            ) : due.isError ? (
              <ErrorState error={due.error} />
            ) : due.data.items.length === 0 ? (
              <Empty>None.</Empty>
            ) : (
              <Stack gap="xs" component="ul" className="plain-list">
                {due.data.items.map((i) => (
                  <li key={i.id}>
                    <Group justify="space-between">
                      <AnchorLink to="/invoices/$invoiceId" params={{ invoiceId: i.id }}>
                        {formatMoney(i.amount, i.currency)} · {formatDateTime(i.createdAt, clinic.timeZone)}
                      </AnchorLink>
                      <StatusBadge status={i.status} />
                    </Group>
                  </li>
                ))}
              </Stack>
            )}
          </Card>
        ) : null}
      </SimpleGrid>
      <Title order={2} size="h3" mt="xl" mb="sm">
        Go to
      </Title>
      <Group>
        {places.map((p) => (
          <ButtonLink key={p.label} variant="default" to={p.to}>
            {p.label}
          </ButtonLink>
        ))}
      </Group>
    </>
  );
}
