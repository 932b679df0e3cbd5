import type { Role } from "./hooks";

export type NavItem = { label: string; to: string; roles: readonly Role[]; group?: "Admin" };

const everyone: readonly Role[] = ["admin", "staff", "doctor", "patient"];
const clinic: readonly Role[] = ["admin", "staff", "doctor"];

/** The one list of places: the navigation shows, and the router allows, only the caller's role's. */
export const NAV: readonly NavItem[] = [
  { label: "Home", to: "/", roles: everyone },
  { label: "Patients", to: "/patients", roles: clinic },
  { label: "My record", to: "/patients", roles: ["patient"] },
  { label: "Appointments", to: "/appointments", roles: everyone },
  { label: "Invoices", to: "/invoices", roles: everyone },
  { label: "Analytics", to: "/analytics", roles: clinic },
  { label: "Doctors", to: "/admin/doctors", roles: ["admin"], group: "Admin" },
  { label: "Users", to: "/admin/users", roles: ["admin"], group: "Admin" },
  { label: "Audit trail", to: "/admin/audit", roles: ["admin"], group: "Admin" },
];

export function navFor(role: Role): NavItem[] {
  return NAV.filter((item) => item.roles.includes(role));
}

/** Whether a path (its first segment) is open to a role. */
export function allowed(path: string, role: Role): boolean {
  const first = "/" + (path.split("/")[1] ?? "");
  const section = first === "/admin" ? "/" + path.split("/").slice(1, 3).join("/") : first;
  return NAV.some((item) => item.to === section && item.roles.includes(role));
}

export const ROLE_LABEL: Record<Role, string> = {
  admin: "Administrator",
  staff: "Staff",
  doctor: "Doctor",
  patient: "Patient",
};
