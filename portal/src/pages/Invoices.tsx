import { Alert, Button, Card, Group, NativeSelect, SimpleGrid, Stepper, Table, Text, TextInput } from "@mantine/core";
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useNavigate, useParams, useSearch } from "@tanstack/react-router";
import { useState } from "react";
import { invoicesCheckout, invoicesGetInvoice, invoicesListInvoices, invoicesPay, invoicesPdf } from "../client/sdk.gen";
import type { DeskPaymentIn, InvoicePublic, InvoiceStatus } from "../client/types.gen";
import { PatientPicker } from "../components/Pickers";
import { Empty, ErrorState, Loading, PageHeader, StatusBadge, notifyDone, notifyFailed, MissingRecord } from "../components/ui";
import { Paging } from "../components/Paging";
import { unwrap } from "../lib/api";
import { formatDateTime, formatMoney, shortId } from "../lib/format";
import { useClinic, useMe } from "../lib/hooks";
import { PatientName } from "../components/PatientName";
import { AnchorLink } from "../components/links";

const PAGE = 20;
const STATUSES: InvoiceStatus[] = ["PENDING", "ISSUED", "PAID", "OVERDUE", "VOID", "NEEDS_ATTENTION"];

export function InvoicesPage() {
  const me = useMe().data;
  const clinic = useClinic();
  const navigate = useNavigate();
  const f = useSearch({ strict: false }) as { status?: InvoiceStatus | ""; patientId?: string; offset?: number };
  const offset = f.offset ?? 0;
  const query = { status: f.status || undefined, patientId: f.patientId || undefined, limit: PAGE, offset };
  const list = useQuery({
    queryKey: ["invoices", query],
    queryFn: () => unwrap(invoicesListInvoices({ query })),
    placeholderData: keepPreviousData,
    refetchInterval: 10_000, // invoices are made by the billing workflow, seconds after a booking
  });
  const set = (next: typeof f) =>
    navigate({ to: "/invoices", search: { ...f, ...next, offset: next.offset ?? 0 }, replace: true });

  return (
    <>
      <PageHeader title="Invoices" />
      <Card withBorder mb="md" component="form" role="search" aria-label="Filter invoices" onSubmit={(e) => e.preventDefault()}>
        <SimpleGrid cols={{ base: 1, sm: 2, md: 3 }}>
          <NativeSelect
            label="Status"
            value={f.status ?? ""}
            onChange={(e) => set({ status: e.currentTarget.value as InvoiceStatus | "" })}
            data={[{ value: "", label: "Any status" }, ...STATUSES]}
          />
          {me && me.role !== "patient" ? (
            <PatientPicker clearable value={f.patientId ?? null} onChange={(id) => set({ patientId: id ?? undefined })} />
          ) : null}
        </SimpleGrid>
      </Card>
      {list.isPending ? (
        <Loading label="Loading invoices…" />
      ) : list.isError ? (
        <ErrorState error={list.error} title="Could not load invoices" />
      ) : list.data.items.length === 0 ? (
        <Empty>No invoices match.</Empty>
      ) : (
        <>
          <Table.ScrollContainer minWidth={560}>
            <Table striped aria-busy={list.isFetching}>
              <caption className="visually-hidden">Invoices</caption>
              <Table.Thead>
                <Table.Tr>
                  <Table.Th scope="col">Invoice</Table.Th>
                  <Table.Th scope="col">Patient</Table.Th>
                  <Table.Th scope="col">Created</Table.Th>
                  <Table.Th scope="col" ta="right">
                    Amount
                  </Table.Th>
                  <Table.Th scope="col">Status</Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {list.data.items.map((inv) => (
                  <Table.Tr key={inv.id}>
                    <Table.Td>
                      <AnchorLink to="/invoices/$invoiceId" params={{ invoiceId: inv.id }} ff="monospace">
                        {shortId(inv.id)}
                      </AnchorLink>
                    </Table.Td>
                    <Table.Td>
                      <PatientName id={inv.patientId} />
                    </Table.Td>
                    <Table.Td>{formatDateTime(inv.createdAt, clinic.timeZone)}</Table.Td>
                    <Table.Td ta="right">{formatMoney(inv.amount, inv.currency)}</Table.Td>
                    <Table.Td>
                      <StatusBadge status={inv.status} />
                    </Table.Td>
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          </Table.ScrollContainer>
          <Paging label="Invoice pages" total={list.data.total} limit={PAGE} offset={offset} onChange={(o) => set({ offset: o })} />
        </>
      )}
    </>
  );
}

export function InvoicePage() {
  const { invoiceId } = useParams({ strict: false }) as { invoiceId: string };
  const me = useMe().data;
  const clinic = useClinic();
  const queryClient = useQueryClient();
  const [downloading, setDownloading] = useState(false);
  const [method, setMethod] = useState<DeskPaymentIn["method"]>("cash");
  const [reference, setReference] = useState("");
  // The payment provider sends the patient back with `?checkout=<id>`; its confirmation reaches the
  // API separately, so the page looks again until the invoice is PAID (or VOID).
  const back = useSearch({ strict: false }) as { checkout?: string };
  const inv = useQuery({
    queryKey: ["invoice", invoiceId],
    queryFn: () => unwrap(invoicesGetInvoice({ path: { invoice_id: invoiceId } })),
    retry: false,
    // Until the PDF is made (PENDING → ISSUED) look again; then the invoice changes only by action.
    refetchInterval: (q) => {
      const s = q.state.data?.status;
      return s === "PENDING" || (back.checkout && s !== "PAID" && s !== "VOID") ? 1500 : false;
    },
  });
  // Patients pay online: the API opens a checkout at the payment provider, whose page takes it.
  const checkout = useMutation({
    mutationFn: () => unwrap(invoicesCheckout({ path: { invoice_id: invoiceId } })),
    onSuccess: (opened) => window.location.assign(opened.checkoutUrl),
    onError: (e) => notifyFailed(e, "The payment could not be started"),
  });
  // Staff record a payment taken at the desk; its reference (receipt, terminal or bank) makes it unique.
  const pay = useMutation({
    mutationFn: () =>
      unwrap(invoicesPay({ path: { invoice_id: invoiceId }, body: { method, reference: reference.trim() } })),
    onSuccess: async (saved: InvoicePublic) => {
      queryClient.setQueryData(["invoice", invoiceId], saved);
      await queryClient.invalidateQueries({ queryKey: ["invoices"] });
      notifyDone(`Payment of ${formatMoney(saved.amount, saved.currency)} recorded; the invoice is ${saved.status}.`);
    },
    onError: (e) => notifyFailed(e, "Payment not recorded"),
  });

  if (inv.isPending) return <Loading label="Loading invoice…" />;
  if (inv.isError) return <MissingRecord what="Invoice" error={inv.error} />;
  const i = inv.data;
  // NEEDS_ATTENTION: the PDF failed for good and waits for an operator; payment is still accepted.
  const payable = i.status === "ISSUED" || i.status === "OVERDUE" || i.status === "NEEDS_ATTENTION";
  const isPatient = me?.role === "patient";
  const takesDeskPayments = me?.role === "staff" || me?.role === "admin";
  // Stepper's `active` is the step in progress: the ones before it show as done.
  const step = { PENDING: 1, ISSUED: 2, OVERDUE: 2, PAID: 3 }[i.status] ?? 0;

  const download = async () => {
    setDownloading(true);
    try {
      // The API answers 307 to a presigned URL valid for minutes; fetch follows it (the bucket
      // allows this origin) and the file is saved from memory.
      const blob = await unwrap(invoicesPdf({ path: { invoice_id: i.id }, parseAs: "blob" }));
      const url = URL.createObjectURL(blob as Blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = `invoice-${shortId(i.id)}.pdf`;
      document.body.append(a);
      a.click();
      a.remove();
      window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
      notifyDone("The PDF is downloaded.");
    } catch (e) {
      notifyFailed(e, "The PDF could not be downloaded");
    } finally {
      setDownloading(false);
    }
  };

  return (
    <>
      <PageHeader title={`Invoice ${shortId(i.id)}`} />
      <Card withBorder maw={720}>
        {i.status === "VOID" ? (
          <Alert color="gray" mb="md" title="Void">
            This invoice was voided because its appointment was cancelled.
          </Alert>
        ) : (
          <Stepper active={step} size="sm" mb="lg" aria-label="Invoice progress" allowNextStepsSelect={false}>
            <Stepper.Step label="Created" description="Priced from the doctor's fee" />
            <Stepper.Step label="Issued" description={i.status === "OVERDUE" ? "Overdue" : "PDF ready"} />
            <Stepper.Step label="Paid" description={i.paidAt ? formatDateTime(i.paidAt, clinic.timeZone) : "Awaiting payment"} />
          </Stepper>
        )}
        <dl className="details">
          <dt>Status</dt>
          <dd>
            <span aria-live="polite" data-testid="invoice-status">
              <StatusBadge status={i.status} />
            </span>
          </dd>
          <dt>Amount</dt>
          <dd>{formatMoney(i.amount, i.currency)}</dd>
          <dt>Patient</dt>
          <dd>
            <AnchorLink to="/patients/$patientId" params={{ patientId: i.patientId }}>
              <PatientName id={i.patientId} />
            </AnchorLink>
          </dd>
          <dt>Appointment</dt>
          <dd>
            <AnchorLink to="/appointments/$appointmentId" params={{ appointmentId: i.appointmentId }}>
              View appointment
            </AnchorLink>
          </dd>
          <dt>Created</dt>
          <dd>{formatDateTime(i.createdAt, clinic.timeZone)}</dd>
          {i.paidAt ? (
            <>
              <dt>Paid</dt>
              <dd>{formatDateTime(i.paidAt, clinic.timeZone)}</dd>
            </>
          ) : null}
        </dl>
        <Group mt="md">
          <Button variant="light" onClick={download} loading={downloading} disabled={!i.pdfAvailable}>
            Download PDF
          </Button>
          {isPatient && payable ? (
            <Button onClick={() => checkout.mutate()} loading={checkout.isPending}>
              Pay
            </Button>
          ) : null}
        </Group>
        {takesDeskPayments && payable ? (
          <form
            onSubmit={(e) => {
              e.preventDefault();
              pay.mutate();
            }}
          >
            <Group mt="md" align="flex-end">
              <NativeSelect
                label="Method"
                value={method}
                onChange={(e) => setMethod(e.currentTarget.value as DeskPaymentIn["method"])}
                data={[
                  { value: "cash", label: "Cash" },
                  { value: "card", label: "Card" },
                  { value: "transfer", label: "Transfer" },
                ]}
              />
              <TextInput
                label="Reference"
                description="Receipt number, or the card terminal's or bank's reference"
                required
                maxLength={100}
                value={reference}
                onChange={(e) => setReference(e.currentTarget.value)}
              />
              <Button type="submit" loading={pay.isPending} disabled={!reference.trim()}>
                Record payment
              </Button>
            </Group>
          </form>
        ) : null}
        {isPatient && back.checkout && payable ? (
          <Text size="sm" mt="xs" c="dimmed">
            Waiting for the payment provider to confirm your payment; this page updates by itself.
          </Text>
        ) : null}
        {i.status === "NEEDS_ATTENTION" && !i.pdfAvailable ? (
          <Text size="sm" mt="xs" c="dimmed">
            The PDF could not be made; the clinic has been asked to look at it. Payment is still possible.
          </Text>
        ) : !i.pdfAvailable ? (
          <Text size="sm" mt="xs" c="dimmed">
            The PDF is being made; this page updates by itself.
          </Text>
        ) : null}
      </Card>
    </>
  );
}
